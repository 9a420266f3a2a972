"""Flask JSON endpoint: ``GET /`` returns a small JSON document."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(message="Hello, World!", items=[1, 2, 3], ok=True)
