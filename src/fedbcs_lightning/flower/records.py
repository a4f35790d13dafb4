"""What travels between the server and a site, as Flower records.

A message to a site holds the round's weights (``weights``, an ArrayRecord), the tensors
of the instruction's extras (``extras``; e.g. FedBCS's global prototypes) and a header
(``fedbcs``, a ConfigRecord: what to do, the round, the run's config as JSON, and the
structure of the extras). A site's reply to ``fit`` holds its weights, its payload
(``payload`` tensors, structure in the header) and its metrics; any reply may instead say
why the site refused (``error`` in the header). Nothing else crosses the wire: no file
names, no images.

Examples
--------
>>> import torch
>>> from fedbcs_lightning.methods.base import ClientUpdate
>>> update = ClientUpdate("a", {"w": torch.ones(2)}, 3, {"loss": 0.5},
...                       {"prototypes": {"enc/1": torch.zeros(4)}})
>>> back = decode_update(encode_update(update))
>>> back.num_examples, back.payload["prototypes"]["enc/1"].shape
(3, torch.Size([4]))
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedbcs_lightning.methods.base import ClientUpdate, Instruction, Weights

HEADER = "fedbcs"


def library_version() -> str:
    """This library's version: a site reports it, the server compares it with its own."""
    from importlib.metadata import version

    return version("fedbcs-lightning")


def weights_record(weights: Weights) -> ArrayRecord:
    return ArrayRecord(
        {k: Array(v.detach().cpu().contiguous().numpy()) for k, v in weights.items()}
    )


def record_weights(record: ArrayRecord) -> Weights:
    return {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in record.items()}


def pack(value: Any) -> tuple[str, dict[str, torch.Tensor]]:
    """A nested structure of dicts, lists, tensors and plain values as JSON plus the
    tensors it refers to (by key)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = item
            return {"__tensor__": key}
        if isinstance(item, dict):
            if all(isinstance(k, str) for k in item):
                return {"__dict__": {k: walk(v) for k, v in item.items()}}
            return {"__items__": [[walk(k), walk(v)] for k, v in item.items()]}
        if isinstance(item, list | tuple):
            return {"__list__": [walk(v) for v in item], "tuple": isinstance(item, tuple)}
        if item is None or isinstance(item, bool | int | float | str):
            return item
        raise TypeError(f"cannot send a {type(item).__name__} to or from a site")

    return json.dumps(walk(value)), tensors


def unpack(text: str, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            if "__tensor__" in item:
                return tensors[item["__tensor__"]]
            if "__dict__" in item:
                return {k: walk(v) for k, v in item["__dict__"].items()}
            if "__items__" in item:
                return {walk(k): walk(v) for k, v in item["__items__"]}
            values = [walk(v) for v in item["__list__"]]
            return tuple(values) if item["tuple"] else values
        return item

    return walk(json.loads(text))


def encode_instruction(instruction: Instruction, header: dict[str, Any]) -> RecordDict:
    """``header`` says what to do (``kind``: describe, fit or evaluate), the round
    (``round``: the instruction's ``server_round``) and carries the run's config;
    ``instruction`` the weights and extras."""
    extras, tensors = pack(instruction.config)
    return RecordDict(
        {
            "weights": weights_record(instruction.weights),
            "extras": weights_record(tensors),
            HEADER: ConfigRecord({**header, "extras": extras}),
        }
    )


def decode_instruction(content: RecordDict) -> tuple[dict[str, Any], Instruction]:
    header = dict(content[HEADER])
    extras = unpack(header.pop("extras"), record_weights(content["extras"]))
    server_round = header.get("round", 0)
    if isinstance(server_round, bool) or not isinstance(server_round, int):
        raise ValueError(f"the message's round is {server_round!r}, not a whole number")
    return header, Instruction(record_weights(content["weights"]), extras, server_round)


def encode_update(update: ClientUpdate) -> RecordDict:
    payload, tensors = pack(update.payload)
    header = {"client": update.client, "num-examples": update.num_examples, "payload": payload}
    return RecordDict(
        {
            "weights": weights_record(update.weights),
            "payload": weights_record(tensors),
            "metrics": MetricRecord({k: float(v) for k, v in update.metrics.items()}),
            HEADER: ConfigRecord(header),
        }
    )


class MalformedReply(ValueError):
    """A site's reply that cannot be read as what was asked (a header, record, count or
    tensor missing or of the wrong kind): for the server, a rejected update of that site."""


def _record(content: RecordDict, name: str, kind: type) -> Any:
    try:
        record = content[name]
    except (KeyError, TypeError):
        raise MalformedReply(f"no {name!r} record") from None
    if not isinstance(record, kind):
        raise MalformedReply(f"{name!r} is a {type(record).__name__}, not a {kind.__name__}")
    return record


def _arrays(record: ArrayRecord, name: str) -> Weights:
    try:
        return record_weights(record)
    except Exception as err:  # any undecodable array: name the record, not a traceback
        raise MalformedReply(f"{name!r} holds an undecodable array ({err})") from None


def decode_update(content: RecordDict) -> ClientUpdate:
    """A site's ``fit`` reply as a :class:`ClientUpdate`; :class:`MalformedReply` says what
    is wrong with one that is not (checked before anything of it is used)."""
    header = _record(content, HEADER, ConfigRecord)
    for key in ("client", "num-examples", "payload"):
        if key not in header:
            raise MalformedReply(f"the header lacks {key!r}")
    client, count, payload = header["client"], header["num-examples"], header["payload"]
    if not isinstance(client, str):
        raise MalformedReply(f"the site name is a {type(client).__name__}, not a string")
    if isinstance(count, bool) or not isinstance(count, int):
        raise MalformedReply(f"the example count must be a whole number, got {count!r}")
    if not isinstance(payload, str):
        raise MalformedReply("the payload description is not text")
    weights = _arrays(_record(content, "weights", ArrayRecord), "weights")
    tensors = _arrays(_record(content, "payload", ArrayRecord), "payload")
    metrics = _record(content, "metrics", MetricRecord)
    values = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedReply(f"metric {key!r} is not a number")
        values[key] = float(value)
    try:
        unpacked = unpack(payload, tensors)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise MalformedReply(f"the payload cannot be read ({type(err).__name__}: {err})") from None
    return ClientUpdate(client, weights, count, values, unpacked)


def encode_reply(values: dict[str, Any]) -> RecordDict:
    """A reply that is not an update (a description, metrics, or ``{"error": why}``): JSON."""
    return RecordDict({HEADER: ConfigRecord({"reply": json.dumps(values)})})


def decode_reply(content: RecordDict) -> dict[str, Any]:
    """A non-update reply's values; :class:`MalformedReply` if it holds none."""
    header = _record(content, HEADER, ConfigRecord)
    text = header.get("reply") if "reply" in header else None
    if not isinstance(text, str):
        raise MalformedReply("the header holds no reply")
    try:
        values = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise MalformedReply(f"the reply is not JSON ({err})") from None
    if not isinstance(values, dict):
        raise MalformedReply("the reply is not a mapping")
    return values


def refusal(content: RecordDict) -> str | None:
    """Why the site refused, if it did (a malformed reply is no refusal; reading it as
    what was asked says what is wrong)."""
    try:
        header = content[HEADER] if HEADER in content else {}
        if "reply" not in header:
            return None
        error = decode_reply(content).get("error")
    except (MalformedReply, TypeError):
        return None
    return None if error is None else str(error)


def nbytes(content: RecordDict) -> dict[str, int]:
    """Bytes of each array record of a message (what a round costs on the wire)."""
    return {
        name: sum(len(array.data) for array in record.values())
        for name, record in content.items()
        if isinstance(record, ArrayRecord)
    }
