"""The viewing-metrics aggregation written with Quix Streams, for benchmarks/stream_bench.py.

Runs in its own venv (.sandbox/bench-venvs/quix: quixstreams 3.28.1 pins its own
confluent-kafka), with the project root on PYTHONPATH for the Avro codec and validation,
which need only fastavro and the standard library.

    python benchmarks/quix_job.py BOOTSTRAP TOPIC N OUTPUT_TOPIC STATE_DIR

Same work as our job, the Quix way: decode (Avro, epoch ms), validate and join the title
runtime, re-key by title_id|country (group_by: a repartition topic, as Quix state is
per message key), tumbling 60 s event-time windows with 130 s grace (D + L of our job),
a reduce to events/plays/viewers/watch/rebuffer/completions, final results to a topic.
Prints one JSON line: events counted after the repartition, and the seconds from the first
to the N-th of them.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers import Deserializer

from pipeline.validate import TitleIndex, TitleInfo, validate
from schemas.catalog import load_catalog
from schemas.codec import DecodeError
from schemas.topics import events_codec


class AvroEvents(Deserializer):
    def __init__(self) -> None:
        super().__init__()
        self._decode = events_codec("ms").decode

    def __call__(self, value: bytes, ctx: Any) -> Any:
        try:
            return self._decode(value)
        except DecodeError:
            return None


def main() -> None:
    bootstrap, topic_name, n_text, output_name, state_dir = sys.argv[1:6]
    n = int(n_text)
    catalog = load_catalog()
    titles = TitleIndex({t.title_id: TitleInfo(t.runtime_ms, t.countries) for t in catalog})
    now_ms = time.time_ns() // 1_000_000

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-bench-{now_ms}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        topic_name,
        value_deserializer=AvroEvents(),
        timestamp_extractor=lambda value, _h, ts, _t: value["event_time"] if value else ts,
    )
    output = app.topic(output_name, value_serializer="json")
    sdf = app.dataframe(topic)
    sdf = sdf.filter(
        lambda e: (
            e is not None and validate(e, titles, now_ms=now_ms, max_future_ms=3_600_000) is None
        )
    )
    sdf = sdf.group_by(lambda e: f"{e['title_id']}|{e['country']}", name="title_country")

    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def count(_e: Any) -> None:
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = time.perf_counter()
        if seen["n"] >= n:
            seen["last"] = time.perf_counter()
            app.stop()

    sdf = sdf.update(count)

    def initializer(e: dict[str, Any]) -> dict[str, Any]:
        return reducer(
            {
                "events": 0,
                "plays": 0,
                "viewers": {},
                "watch_ms": 0,
                "rebuffer_ms": 0,
                "completions": 0,
            },
            e,
        )

    def reducer(agg: dict[str, Any], e: dict[str, Any]) -> dict[str, Any]:
        agg["events"] += 1
        agg["viewers"][e["profile_id"]] = 1
        agg["watch_ms"] += e["watched_ms"]
        agg["rebuffer_ms"] += e["buffer_ms"]
        if e["event_type"] == "PLAY":
            agg["plays"] += 1
        elif e["event_type"] == "STOP":
            runtime_ms = titles.runtime_ms(e["title_id"])
            if runtime_ms > 0 and e["position_ms"] * 100 >= runtime_ms * 90:
                agg["completions"] += 1
        return agg

    sdf = (
        sdf.tumbling_window(duration_ms=60_000, grace_ms=130_000)
        .reduce(reducer=reducer, initializer=initializer)
        .final()
    )
    sdf = sdf.apply(
        lambda w: {
            **w["value"],
            "viewers": len(w["value"]["viewers"]),
            "start": w["start"],
            "end": w["end"],
        }
    )
    sdf.to_topic(output)
    app.run()
    elapsed = seen["last"] - seen["first"] if seen["last"] else None
    print(json.dumps({"events": seen["n"], "elapsed_s": elapsed}))


if __name__ == "__main__":
    main()
