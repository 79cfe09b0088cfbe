"""A settings module as a Django or plain project would have one."""

DEBUG = True
EBIND_WORKER_CONCURRENCY = 2
EBIND_WORKER_CLAIMS = ["reports"]
