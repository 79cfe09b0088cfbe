"""Labels: tag DAGs at creation and list them by label (AND semantics, newest first).

# expect: billing: nightly-2, nightly-1, adhoc-1
# expect: billing+nightly: nightly-2, nightly-1
# expect: all: nightly-2, nightly-1, adhoc-1, untagged
"""

from __future__ import annotations

import asyncio

import ebind
import ebind.logging
from ebind.embed import start_node
from ebind.workflow import DAG

app = ebind.App("labels")


@app.task(name="lab.noop")
async def noop() -> None:
    return None


async def main() -> None:
    ebind.logging.configure(level="warning")
    with start_node() as node:
        app.servers = [node.client_url]
        async with app:
            wf = app.workflow
            plan = [
                ("untagged", ()),
                ("adhoc-1", ("billing",)),
                ("nightly-1", ("billing", "nightly")),
                ("nightly-2", ("nightly", "billing")),
            ]
            for dag_id, labels in plan:
                dag = DAG(id=dag_id, labels=labels)
                dag.step("noop", noop)
                await dag.submit(wf)
                await asyncio.sleep(0.01)  # distinct creation times
            for title, want in [
                ("billing", ["billing"]),
                ("billing+nightly", ["billing", "nightly"]),
                ("all", []),
            ]:
                metas = await wf.list_dags(want)
                print(f"{title}:", ", ".join(m.id for m in metas))


if __name__ == "__main__":
    asyncio.run(main())
