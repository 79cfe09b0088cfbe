import ebind

app = ebind.App("quickstart")  # connects to $EBIND_NATS_URL or 127.0.0.1:4222


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="greet")
def greet(who: str) -> str:  # plain `def` runs in a thread pool
    return f"hello, {who}"
