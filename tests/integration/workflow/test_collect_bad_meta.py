"""One odd meta record (a time without a zone, a body naming another DAG) does not stop
history collection for every other DAG.
"""

from __future__ import annotations

import pytest

from ebind.app import App
from ebind.errors import DAGNotFound
from ebind.workflow.dag import DAG
from ebind.workflow.history import collect
from ebind.workflow.types import DAGStatus

pytestmark = pytest.mark.timeout(60)
PRE = "$KV.ebind-dags."


async def _finished(app: App, dag_id: str) -> None:
    d = DAG(dag_id)
    d.step("a", "wf.add", 1, 2)
    await d.submit(app.workflow)
    assert (await app.workflow.wait(dag_id, timeout=15)).status is DAGStatus.DONE


@pytest.mark.parametrize(
    "key,body",
    [
        # a time without an offset (another tool's writer)
        ("aaa.meta", b'{"id":"aaa","status":"done","finished_at":"2020-01-01T00:00:00"}'),
        # an id that is not a valid DAG id, under a valid key
        ("aab.meta", b'{"id":"a.b","status":"done","finished_at":"2020-01-01T00:00:00Z"}'),
    ],
)
async def test_one_bad_meta_stops_no_collection(
    app: App, start_worker, key: str, body: bytes
) -> None:
    await start_worker("w1")
    await _finished(app, "zz-old")
    await app.js.publish(PRE + key, body)
    try:
        report = await collect(app.workflow.store, 0.0)
    except Exception as exc:
        pytest.fail(f"collect raised {exc!r}; zz-old was never removed")
    assert "zz-old" in report.removed
    with pytest.raises(DAGNotFound):
        await app.workflow.store.get_meta("zz-old")
