"""The inventory schema: clear errors naming file and path; the embedded default; the shipped example."""
from pathlib import Path

import pytest

from orchestrator.boards.inventory import load_inventory
from orchestrator.errors import UserError

ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path, text):
    p = tmp_path / "boards.yaml"
    p.write_text(text)
    return p


def test_shipped_example_validates():
    inv = load_inventory(ROOT / "configs" / "boards.yaml")
    assert inv.boards and all(b.name for b in inv.boards)
    # a relative path in a boards file is the file's folder's: the shipped one points at the repository's .dance/
    assert inv.known_hosts_path() == ROOT / ".dance" / "known_hosts"


def test_no_file_means_one_local_board(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inv = load_inventory(None)
    assert [(b.name, b.transport) for b in inv.boards] == [("local", "local")]
    assert inv.source == "embedded default"


@pytest.mark.parametrize("text, expect", [
    ("boards:\n  - {name: a, transport: ssh, user: u}\n", "boards.0: Value error, transport ssh needs host"),
    ("boards:\n  - {name: a, transport: local}\n  - {name: a, transport: local}\n", "appears twice"),
    ("boards:\n  - {name: 'bad name', transport: local}\n", "boards.0.name"),
    ("boards:\n  - {name: a, transport: local, colour: red}\n", "boards.0.colour: unknown key"),
    ("boards:\n  - {name: a, transport: local, workdir: tmp}\n", "boards.0.workdir"),
    ("boards:\n  - {name: a, transport: telnet}\n", "boards.0.transport"),
    ("boards: []\n", "boards"),
    ("boards: [\n", "not valid YAML at line"),
])
def test_bad_inventory_is_one_clear_error(tmp_path, text, expect):
    p = _write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_inventory(p)
    assert str(p) in str(e.value) and expect in str(e.value)


def test_labels_match_and_name_is_a_label(tmp_path):
    p = _write(tmp_path, "boards:\n  - {name: a, transport: local, labels: [tx2, lab]}\n"
                         "  - {name: b, transport: local, labels: [orin]}\n")
    inv = load_inventory(p)
    assert [b.name for b in inv.matching(["tx2"])] == ["a"]
    assert [b.name for b in inv.matching(["b"])] == ["b"]
    assert inv.matching(["tx2", "orin"]) == []
    with pytest.raises(UserError, match="no board named 'c'"):
        inv.board("c")


def test_scoring_model_is_eq1(tmp_path):
    """The scoring job measures the real Eq. 1: its ONNX output equals workers' sc_mean."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from orchestrator.boards.scoring import build_scoring_onnx
    from workers.dance.complexity import sc_mean

    path = build_scoring_onnx(tmp_path / "sc.onnx", 37, 53)
    x = np.random.RandomState(0).randint(0, 256, (1, 37, 53, 3)).astype(np.uint8)
    ref = float(sc_mean(torch.from_numpy(x))[0])
    got = float(ort.InferenceSession(str(path)).run(
        None, {"input": x.transpose(0, 3, 1, 2).astype(np.float32)})[0].ravel()[0])
    assert abs(got - ref) <= 1e-5 * ref
