"""A small Flask application exercising common framework paths."""

import hashlib
import time

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/")
def index():
    return "flask index"


@app.route("/json", methods=["GET", "POST"])
def json_route():
    if request.method == "POST":
        data = request.get_json()
        return jsonify(received=data, method="POST")
    return jsonify(hello="world", args=request.args.to_dict())


@app.post("/form")
def form():
    return jsonify(form=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(
        filename=f.filename,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        field=request.form.get("note"),
    )


@app.get("/stream")
def stream():
    n = int(request.args.get("n", "5"))
    who = request.args.get("who", "anon")

    def gen():
        for i in range(n):
            # request is still accessible thanks to stream_with_context
            yield f"{request.args.get('who', who)}:{i}\n"
            time.sleep(0.05)

    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.get("/cookie/set")
def cookie_set():
    resp = jsonify(set=True)
    resp.set_cookie("flavour", "oatmeal")
    resp.set_cookie("session_id", "abc123", httponly=True)
    return resp


@app.get("/cookie/get")
def cookie_get():
    return jsonify(cookies=request.cookies.to_dict())


@app.get("/missing")
def missing():
    return jsonify(error="nope"), 404


@app.get("/redirect")
def redirect_route():
    from flask import redirect, url_for

    return redirect(url_for("index"))


@app.get("/url")
def url_info():
    return jsonify(url=request.url, base_url=request.base_url, script_root=request.script_root, path=request.path)
