"""FastAPI app for the ``-k asgi`` framework tests."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()
ITEMS = {1: {"id": 1, "name": "hammer"}}


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def root():
    return {"hello": "world"}


@app.get("/items/{item_id}")
async def get_item(item_id: int, q: str | None = None):
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return {**ITEMS[item_id], "q": q}


@app.post("/items")
async def create_item(item: Item):
    return {"received": item.model_dump(), "total": round(item.price * 2, 2)}


@app.get("/sync")
def sync_endpoint():
    # a def endpoint runs in FastAPI's threadpool, off the loop
    return {"sync": True}


@app.get("/boom")
async def boom():
    raise RuntimeError("fastapi boom")
