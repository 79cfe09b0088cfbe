import ebind

app = ebind.App("quickstart")  # NATS from $EBIND_NATS_URL, else nats://127.0.0.1:4222


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="greet")
def greet(who: str) -> str:  # plain `def` handlers run in the worker's thread pool
    return f"hello, {who}"
