"""Dataset intake through the API: inline and worker validation, limits, splits, conversions, leakage, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import wait_for


def _chat(i: int, label: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Classify the ticket."},
                {"role": "user", "content": f"ticket number {i} about topic {label} with words {i * 7} {i * 13}"},
                {"role": "assistant", "content": label},
            ]
        }
    )


def _dataset(n: int = 40) -> bytes:
    return ("\n".join(_chat(i, ["billing", "account", "bug"][i % 3]) for i in range(n)) + "\n").encode()


def _up(client, headers, content, name="d.jsonl", **fields):
    return client.post("/v1/datasets", files={"file": (name, content)}, data=fields, headers=headers)


def test_report_has_lines_fields_and_cost(client, project):
    bad = _dataset(12) + b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": ""}]}\n'
    r = _up(client, project["headers"], bad, model="gpt-4.1-mini-2025-04-14")
    assert r.status_code == 201
    ds = r.json()
    assert ds["status"] == "invalid" and ds["summary"]["error_count"] >= 1
    report = client.get(f"/v1/datasets/{ds['id']}/report", headers=project["headers"]).json()
    located = {(i["code"], i["line"], i["field"]) for i in report["issues"]}
    assert ("unknown_role", 13, "messages[0].role") in located
    good = _up(client, project["headers"], _dataset(12), model="gpt-4.1-mini-2025-04-14").json()
    assert good["status"] == "ready"
    assert good["summary"]["cost"]["n_epochs_auto"] == 8  # 100 // 12
    assert client.get("/v1/dataset-rules", headers=project["headers"]).json()["data"]


def test_large_upload_is_validated_by_the_worker(client, project, worker, settings, monkeypatch):
    client.app.state.settings = settings.model_copy(update={"inline_validation_bytes": 100})
    ds = _up(client, project["headers"], _dataset(30)).json()
    assert ds["status"] == "validating"
    done = wait_for(
        lambda: (
            (d := client.get(f"/v1/datasets/{ds['id']}", headers=project["headers"]).json())["status"] != "validating"
            and d
        )
    )
    assert done["status"] == "ready" and done["n_examples"] == 30
    types = [e["type"] for e in client.get("/v1/events", headers=project["headers"]).json()["data"]]
    assert "dataset.ready" in types


def test_upload_limit_is_413_and_keeps_nothing(client, project, settings):
    client.app.state.settings = settings.model_copy(update={"max_upload_bytes": 1000})
    r = _up(client, project["headers"], b"x" * 5000)
    assert r.status_code == 413 and r.json()["code"] == "file_too_large"
    leftovers = [p for p in (settings.files_dir / "tmp").glob("*")] if (settings.files_dir / "tmp").exists() else []
    assert leftovers == []


def test_upload_needs_multipart_with_a_file(client, project):
    r = client.post("/v1/datasets", content=b"{}", headers=project["headers"] | {"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "multipart_required"
    r = client.post("/v1/datasets", data={"format": "chat"}, files={"x": ("a", b"1")}, headers=project["headers"])
    assert r.status_code == 422 and r.json()["code"] == "file_missing"


def test_split_is_frozen_and_linked(client, project):
    ds = _up(client, project["headers"], _dataset(60)).json()
    body = {"fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "seed": 7, "stratify_by": "assistant"}
    a = client.post(f"/v1/datasets/{ds['id']}/split", json=body, headers=project["headers"])
    assert a.status_code == 201, a.text
    splits = a.json()["splits"]
    assert {k: v["n_examples"] for k, v in splits.items()} == {"train": 48, "validation": 6, "test": 6}
    assert all(v["source_dataset_id"] == ds["id"] for v in splits.values())
    b = client.post(f"/v1/datasets/{ds['id']}/split", json=body, headers=project["headers"]).json()["splits"]
    assert {k: v["sha256"] for k, v in splits.items()} == {k: v["sha256"] for k, v in b.items()}
    leak = client.post(
        "/v1/datasets/leakage",
        json={"train_dataset_id": splits["train"]["id"], "test_dataset_id": splits["test"]["id"]},
        headers=project["headers"],
    ).json()
    assert leak["exact_test_lines"] == 0
    leak = client.post(
        "/v1/datasets/leakage",
        json={"train_dataset_id": ds["id"], "test_dataset_id": splits["test"]["id"]},
        headers=project["headers"],
    ).json()
    assert leak["exact_test_lines"] == 6


def test_prompt_completion_converts_to_chat(client, project):
    rows = "\n".join(json.dumps({"prompt": f"Q{i}\n\n###\n\n", "completion": f" A{i} END"}) for i in range(12)) + "\n"
    src = _up(client, project["headers"], rows.encode()).json()
    assert src["format"] == "prompt_completion"
    r = client.post(f"/v1/datasets/{src['id']}/convert", json={"to": "chat"}, headers=project["headers"])
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["dataset"]["format"] == "chat" and out["dataset"]["source_dataset_id"] == src["id"]
    assert out["conversion"]["examples_written"] == 12


def test_csv_upload_and_conversion(client, project):
    csv = "question,answer\n" + "".join(f'"q {i}, with comma",a{i}\n' for i in range(12))
    cols = json.dumps({"user": "question", "assistant": "answer"})
    src = _up(client, project["headers"], csv.encode(), name="d.csv", format="csv", csv_columns=cols).json()
    assert src["format"] == "csv", src
    r = client.post(f"/v1/datasets/{src['id']}/convert", json={"to": "chat"}, headers=project["headers"])
    assert r.status_code == 201, r.text
    assert r.json()["dataset"]["n_examples"] == 12


def _settled(client, headers, dataset_id):
    def done():
        d = client.get(f"/v1/datasets/{dataset_id}", headers=headers).json()
        return d if d["status"] != "validating" else None

    return wait_for(done)


def _inline_limit(client, settings, limit):
    client.app.state.settings = settings.model_copy(update={"inline_validation_bytes": limit})


def test_large_split_is_made_by_the_worker_byte_identical_to_the_inline_split(
    client, project, other_project, worker, settings
):
    body = {"fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "seed": 7, "stratify_by": "assistant"}
    # The inline split, in another project (content is stored once per project).
    ref_src = _up(client, other_project["headers"], _dataset(60)).json()
    inline = client.post(f"/v1/datasets/{ref_src['id']}/split", json=body, headers=other_project["headers"])
    assert inline.status_code == 201, inline.text
    expected = inline.json()["splits"]

    src = _up(client, project["headers"], _dataset(60)).json()
    assert src["status"] == "ready"
    _inline_limit(client, settings, 100)  # the source (about 8 KB) is now "large"
    headers = project["headers"] | {"Idempotency-Key": "split-1"}
    r = client.post(f"/v1/datasets/{src['id']}/split", json=body, headers=headers)
    assert r.status_code == 202, r.text
    pending = r.json()["splits"]
    assert list(pending) == ["train", "validation", "test"]
    for name, ds in pending.items():
        assert ds["status"] == "validating" and ds["source_dataset_id"] == src["id"]
        assert ds["derivation"]["output"] == "pending" and ds["derivation"]["split"] == name
        assert ds["sha256"].startswith("pending-") and ds["filename"] == f"d.{name}.jsonl"
    # The same key replays the answer; the same request without a key finds the same datasets: no duplicates.
    again = client.post(f"/v1/datasets/{src['id']}/split", json=body, headers=headers)
    assert again.status_code == 202 and again.json() == r.json()
    plain = client.post(f"/v1/datasets/{src['id']}/split", json=body, headers=project["headers"])
    assert plain.status_code == 202
    assert {k: v["id"] for k, v in plain.json()["splits"].items()} == {k: v["id"] for k, v in pending.items()}
    reused = client.post(f"/v1/datasets/{src['id']}/split", json=body | {"seed": 8}, headers=headers)
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"

    done = {name: _settled(client, project["headers"], ds["id"]) for name, ds in pending.items()}
    for name, ds in done.items():
        # As inline: validation and test have 6 examples, fewer than the 10 a training file needs.
        assert ds["status"] == expected[name]["status"] == ("ready" if name == "train" else "invalid"), ds
        # Frozen: the worker's files are byte-identical to the inline split's.
        assert ds["sha256"] == expected[name]["sha256"] and ds["size_bytes"] == expected[name]["size_bytes"]
        assert ds["n_examples"] == expected[name]["n_examples"]
        assert "output" not in ds["derivation"]
        want = {k: v for k, v in expected[name]["derivation"].items()}
        assert {k: ds["derivation"][k] for k in want} == want
    listed = client.get("/v1/datasets?limit=100", headers=project["headers"]).json()["data"]
    assert len(listed) == 4  # the source and its three splits, once each
    # Once made, the same request still answers with those datasets.
    later = client.post(f"/v1/datasets/{src['id']}/split", json=body, headers=project["headers"]).json()
    assert {k: v["sha256"] for k, v in later["splits"].items()} == {k: v["sha256"] for k, v in expected.items()}
    types = [e["type"] for e in client.get("/v1/events?limit=100", headers=project["headers"]).json()["data"]]
    assert (types.count("dataset.ready"), types.count("dataset.invalid")) == (2, 2)  # one event per dataset


def test_small_split_stays_inline(client, project, settings):
    src = _up(client, project["headers"], _dataset(30)).json()
    _inline_limit(client, settings, 1 << 20)
    body = {"fractions": {"train": 0.5, "test": 0.5}, "seed": 1}
    r = client.post(f"/v1/datasets/{src['id']}/split", json=body, headers=project["headers"] | {"Idempotency-Key": "k"})
    assert r.status_code == 201
    assert all(ds["status"] == "ready" and "output" not in ds["derivation"] for ds in r.json()["splits"].values())
    replay = client.post(
        f"/v1/datasets/{src['id']}/split", json=body, headers=project["headers"] | {"Idempotency-Key": "k"}
    )
    assert replay.status_code == 201 and replay.json() == r.json()
    # The source becomes "large" (the limit changed): the same request answers with the datasets already made.
    _inline_limit(client, settings, 100)
    later = client.post(f"/v1/datasets/{src['id']}/split", json=body, headers=project["headers"])
    assert later.status_code == 202
    assert {k: v["id"] for k, v in later.json()["splits"].items()} == {
        k: v["id"] for k, v in r.json()["splits"].items()
    }


def test_deferred_derivations_that_fail_or_repeat_a_dataset_are_invalid(client, project, worker, settings):
    src = _up(client, project["headers"], _dataset(30)).json()
    _inline_limit(client, settings, 100)
    # A stratification field the examples lack: accepted (the path is well formed), then fails in the worker.
    r = client.post(
        f"/v1/datasets/{src['id']}/split",
        json={"fractions": {"train": 0.5, "test": 0.5}, "stratify_by": "metadata.label"},
        headers=project["headers"],
    )
    assert r.status_code == 202
    failed = _settled(client, project["headers"], r.json()["splits"]["train"]["id"])
    assert failed["status"] == "invalid"
    report = client.get(f"/v1/datasets/{failed['id']}/report", headers=project["headers"]).json()
    assert [(i["code"], i["severity"]) for i in report["issues"]] == [("derivation_failed", "error")]
    assert "metadata.label" in report["issues"][0]["message"]
    # Arguments the split refuses outright are a 422 before anything is created.
    bad = client.post(
        f"/v1/datasets/{src['id']}/split", json={"fractions": {"train": 0.5, "test": 0.6}}, headers=project["headers"]
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_split"
    # All examples in "train": the file is the source itself, which the project already has.
    r = client.post(f"/v1/datasets/{src['id']}/split", json={"fractions": {"train": 1.0}}, headers=project["headers"])
    same = _settled(client, project["headers"], r.json()["splits"]["train"]["id"])
    assert same["status"] == "invalid" and same["derivation"]["duplicate_of"] == src["id"]
    report = client.get(f"/v1/datasets/{same['id']}/report", headers=project["headers"]).json()
    assert report["issues"][0]["code"] == "duplicate_dataset"


def test_a_source_cannot_be_deleted_while_datasets_are_made_from_it(client, project, settings, monkeypatch):
    # Nothing reaches a worker (the session's in-process worker would take a message even without the `worker`
    # fixture, and with Redis so would any other): the split stays pending.
    from service import queue

    monkeypatch.setattr(queue, "enqueue", lambda *args, **kwargs: True)
    src = _up(client, project["headers"], _dataset(30)).json()
    _inline_limit(client, settings, 100)
    r = client.post(f"/v1/datasets/{src['id']}/split", json={"fractions": {"train": 1.0}}, headers=project["headers"])
    assert r.status_code == 202
    gone = client.delete(f"/v1/datasets/{src['id']}", headers=project["headers"])
    assert gone.status_code == 409 and gone.json()["code"] == "dataset_in_use"
    child = r.json()["splits"]["train"]["id"]
    assert client.delete(f"/v1/datasets/{child}", headers=project["headers"]).status_code == 200
    assert client.delete(f"/v1/datasets/{src['id']}", headers=project["headers"]).status_code == 200


def test_large_conversion_is_made_by_the_worker(client, project, other_project, worker, settings):
    rows = "\n".join(json.dumps({"prompt": f"Q{i}\n\n###\n\n", "completion": f" A{i} END"}) for i in range(12)) + "\n"
    ref = _up(client, other_project["headers"], rows.encode()).json()
    inline = client.post(f"/v1/datasets/{ref['id']}/convert", json={"to": "chat"}, headers=other_project["headers"])
    assert inline.status_code == 201

    src = _up(client, project["headers"], rows.encode()).json()
    _inline_limit(client, settings, 100)
    r = client.post(f"/v1/datasets/{src['id']}/convert", json={"to": "chat"}, headers=project["headers"])
    assert r.status_code == 202, r.text
    assert r.json()["conversion"] is None and r.json()["dataset"]["derivation"]["output"] == "pending"
    again = client.post(f"/v1/datasets/{src['id']}/convert", json={"to": "chat"}, headers=project["headers"])
    assert again.json()["dataset"]["id"] == r.json()["dataset"]["id"]
    done = _settled(client, project["headers"], r.json()["dataset"]["id"])
    assert done["status"] == "ready" and done["format"] == "chat"
    assert done["sha256"] == inline.json()["dataset"]["sha256"]
    assert done["derivation"]["summary"] == inline.json()["conversion"]
    # Options that cannot work are refused at once, not in the worker.
    bad = client.post(
        f"/v1/datasets/{src['id']}/convert",
        json={"to": "chat", "template": {"strip_whitespace": "maybe"}},
        headers=project["headers"],
    )
    assert bad.status_code == 422, bad.text


def test_validate_cli_exit_codes(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_bytes(_dataset(12))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"messages": []}\n')
    ok = subprocess.run([sys.executable, "-m", "service.cli", "validate", str(good), "--json"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["valid"] is True
    ko = subprocess.run([sys.executable, "-m", "service.cli", "validate", str(bad)], capture_output=True, text=True)
    assert ko.returncode == 1 and "INVALID" in ko.stdout


def test_malformed_multipart_body_is_a_problem_not_a_500(client, project):
    r = client.post(
        "/v1/datasets",
        content=b"--B\r\n[]--B--\r\n",
        headers={**project["headers"], "content-type": "multipart/form-data; boundary=B"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "multipart_invalid"
