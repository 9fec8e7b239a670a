"""Export a trained ranker into a TF Serving model repo: ``<repo>/<name>/<version>/``.

The version directory holds the SavedModel. Its signature ``serving_default`` takes the model's named inputs, one
row per (user, item) pair, and returns ``{"score": (batch, 1) float32}``, a fixed name clients rely on. Its
signature ``rank`` scores one request: the request's inputs once (one row each: user, context, session, profile)
and the candidates' ``item_id`` (a vector); the item inputs come from a table of the catalog inside the model (an
id it lacks gets neutral values), so a client builds nothing per candidate and sends ~50x fewer values. The
catalog is the one trained on; ``metadata.json`` says how many items it holds. ``metadata.json`` (features,
training data, metrics, seed); and ``model.keras``, the Keras model itself for analysis or in-process scoring
(``keras.saving.load_model(path, compile=False)``), which TF Serving ignores. A version is written under a
dot-name and renamed into place whole, so a server polling the repo never loads a half-written one.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from models.examples import RANK_SIGNATURE, REQUEST_INPUT_NAMES, input_spec, item_table
from models.wide_deep import OUTPUT
from streamrec.errors import UserError

SIGNATURE = "serving_default"
METADATA = "metadata.json"
KERAS_FILE = "model.keras"


def feature_list(live: bool) -> dict[str, dict]:
    """The signature's inputs as metadata: dtype and shape (-1 for any size)."""
    return {name: {"dtype": dtype, "shape": [-1, -1 if width is None else width]}
            for name, (dtype, width) in input_spec(live).items()}


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version in ``model_dir`` (1 for none)."""
    if not model_dir.is_dir():
        return 1
    return max((int(p.name) for p in model_dir.iterdir() if p.name.isascii() and p.name.isdigit()), default=0) + 1


def export_model(model, model_dir: Path, live: bool, metadata: dict, items=None) -> tuple[int, Path]:
    """Write ``model`` as the next version under ``model_dir``; returns (version, its directory).
    ``metadata`` (training data, metrics, seed, ...) is stored with the signature's feature list;
    ``items`` (``models.examples.item_frame`` of the catalog) adds the ``rank`` signature."""
    import keras
    import tensorflow as tf

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    staging = model_dir / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = {name: tf.TensorSpec([None, width], dtype, name=name) for name, (dtype, width) in input_spec(live).items()}
    archive.add_endpoint(SIGNATURE, lambda inputs: {OUTPUT: model(inputs, training=False)}, input_signature=[spec])
    if items is not None:
        _add_rank_endpoint(archive, model, live, items)
    archive.write_out(str(staging), verbose=False)
    model.save(staging / KERAS_FILE)
    record = {
        "name": model_dir.name,
        "version": version,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "signature": SIGNATURE,
        "output": {"name": OUTPUT, "dtype": "float32", "shape": [-1, 1], "meaning": "P(the user picks the item now)"},
        "features": feature_list(live),
        **({"rank_signature": {"name": RANK_SIGNATURE, "catalog_items": len(items)}} if items is not None else {}),
        **metadata,
    }
    (staging / METADATA).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    target = model_dir / str(version)
    try:
        staging.rename(target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"cannot publish version {version} at {target} (another export at the same time?): "
                        f"{e.strerror}") from None
    return version, target


def _add_rank_endpoint(archive, model, live: bool, items) -> None:
    """The ``rank`` signature: request inputs (1, width) + ``item_id`` (n,) -> ``{"score": (n, 1)}``."""
    import keras
    import tensorflow as tf

    table = item_table(items)
    ids = keras.layers.StringLookup(vocabulary=[str(i) for i in table["item_id"][1:, 0]], name="rank_item_row")
    ids(tf.constant([""]))  # built by a first call, as export requires
    archive.track(ids)  # its hash table must be saved with the model
    columns = {name: tf.constant(values) for name, values in table.items() if name != "item_id"}
    spec = input_spec(live)
    request_spec = {name: tf.TensorSpec([1, spec[name][1]], spec[name][0], name=name)
                    for name in REQUEST_INPUT_NAMES if name in spec}
    request_spec["item_id"] = tf.TensorSpec([None], tf.string, name="item_id")

    def rank(inputs):
        candidates = inputs["item_id"]
        rows = ids(candidates)  # 0: an id the catalog lacks, whose row holds neutral values
        n = tf.shape(candidates)[0]
        x = {name: tf.gather(column, rows) for name, column in columns.items()}
        x["item_id"] = tf.reshape(candidates, [-1, 1])
        x |= {name: tf.repeat(inputs[name], n, axis=0) for name in request_spec if name != "item_id"}
        return {OUTPUT: model(x, training=False)}

    archive.add_endpoint(RANK_SIGNATURE, rank, input_signature=[request_spec])
