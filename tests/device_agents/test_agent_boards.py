"""What the total means on each board model (boards.py rail tables), on emulated trees
whose rails are known, and in every documented tegrastats format."""

import glob
import os

import pytest
from agent_helpers import TX2_CARRIER_RAILS, TX2_MODULE_RAILS, agent_main

from device_agents import boards, emulate
from device_agents.errors import AgentError
from device_agents.sources import make_source, parse_tegrastats_line

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
POWER = ["--duration", "0.2", "--repeats", "2", "--min-updates", "1", "--min-samples", "3",
         "--interval-ms", "20"]


def _tree(tmp_path, layout, p=10.0, **kw):
    root = str(tmp_path / layout)
    emulate.build_tree(root, layout, power_w=p, **kw)
    return root


def _total(root, **kw):
    src, _ = make_source("auto", root, nvml_lib="/nonexistent.so", **kw)
    return src, src.total_of(src.read())


# ---------------------------------------------------------------- board detection
@pytest.mark.parametrize("layout,key", [("tx2", "tx2"), ("orin", "agx-orin"),
                                        ("orin-nx", "orin-nx"), ("nano", "nano"),
                                        ("agx-xavier", "agx-xavier"), ("thor", "thor")])
def test_board_detected_from_device_tree(tmp_path, layout, key):
    root = _tree(tmp_path, layout)
    assert boards.detect(root).key == key


def test_compatible_wins_over_an_unhelpful_model_string(tmp_path):
    root = _tree(tmp_path, "orin")
    with open(os.path.join(root, "proc/device-tree/model"), "w") as f:
        f.write("Custom carrier\x00")
    assert boards.detect(root).key == "agx-orin"  # p3701 in compatible
    os.unlink(os.path.join(root, "proc/device-tree/compatible"))
    assert boards.detect(root) is None


def test_every_table_names_its_boundary_and_public_source():
    for t in boards.TABLES:
        assert t.boundary and t.source, t.key
        assert t.total, t.key


# ---------------------------------------------------------------- totals per model
def test_agx_orin_total_is_three_rails_not_four(tmp_path):
    root = _tree(tmp_path, "orin", p=10.0)
    src, total = _total(root)
    vals = dict(zip(src.rails, src.read()))
    assert total == pytest.approx(10.0, rel=1e-3)
    # VDDQ_VDD2_1V8AO is fed by VIN_SYS_5V0: adding all four over-reports by 12 %
    assert sum(vals.values()) == pytest.approx(11.2, rel=1e-3)
    assert src.total_label() == "sum(VDD_GPU_SOC,VDD_CPU_CV,VIN_SYS_5V0)"
    assert src.total_complete and "VDDQ_VDD2_1V8AO is fed by VIN_SYS_5V0" in src.boundary
    assert src.describe()["board"]["nested"] == {"VDDQ_VDD2_1V8AO": "VIN_SYS_5V0"}


def test_agx_orin_power_command_reports_the_module_total(tmp_path):
    root = _tree(tmp_path, "orin", p=12.0)
    rc, doc = agent_main(["power", "--fs-root", root] + POWER, str(tmp_path / "o.json"))
    assert rc == 0, doc.get("error")
    assert doc["power_w_mean"] == pytest.approx(12.0, rel=1e-3)
    assert doc["energy_total_complete"] is True
    assert doc["power"]["board"]["key"] == "agx-orin"
    assert "sum" not in doc["rails"] and "NC" not in doc["rails"]


def test_tx2_carrier_is_its_own_boundary(tmp_path):
    root = _tree(tmp_path, "tx2", p=8.0)
    src, total = _total(root)
    assert set(src.rails) == TX2_MODULE_RAILS | TX2_CARRIER_RAILS
    assert total == pytest.approx(8.0)  # VDD_IN only, carrier never mixed in
    assert src.carrier_rail == "VDD_MUX"
    assert set(src.rails[i] for i in src.carrier_members) == TX2_CARRIER_RAILS
    assert src.carrier_of(src.read()) == pytest.approx(8.0 * emulate.TX2_CARRIER_FRACTION)
    rc, doc = agent_main(["power", "--fs-root", root] + POWER, str(tmp_path / "t.json"))
    assert rc == 0, doc.get("error")
    assert doc["power_w_mean"] == pytest.approx(8.0)
    assert doc["carrier"]["total"] == "VDD_MUX"
    assert doc["carrier"]["power_w_mean"] == pytest.approx(8.0 * 0.35)
    assert all(r["carrier_energy_j"] == pytest.approx(2.8 * r["duration_s"])
               for r in doc["repeats"])
    assert doc["rails"]["VDD_MUX"]["boundary"] == "carrier"
    assert doc["rails"]["VDD_IN"]["boundary"] == "module"


def test_tx2_without_carrier_boards(tmp_path):
    root = _tree(tmp_path, "tx2", p=8.0, carrier=False)
    src, total = _total(root)
    assert set(src.rails) == TX2_MODULE_RAILS and src.carrier_rail is None
    assert total == pytest.approx(8.0)


def test_thor_input_from_ina238_not_ina3221(tmp_path):
    root = _tree(tmp_path, "thor", p=30.0)
    src, total = _total(root)
    assert src.name == "hwmon" and src.total_rail == "VIN"
    assert total == pytest.approx(30.0)
    devs = src.details["devices"]
    assert any("/drivers/ina238/" in d for d in devs)
    vin_dev = src.devices[src.rails.index("VIN")]
    assert glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina238", vin_dev))
    # the INA3221 sub-rails are read but not summed
    assert sum(v for r, v in zip(src.rails, src.read()) if r != "VIN") == pytest.approx(
        30.0 * 0.85, rel=1e-3)


def test_nano_pom_5v_in(tmp_path):
    root = _tree(tmp_path, "nano", p=6.0)
    src, total = _total(root)
    assert src.name == "iio" and src.total_rail == "POM_5V_IN"
    assert total == pytest.approx(6.0)


def test_orin_nx_vdd_in_and_agx_xavier_documented_sum(tmp_path):
    src, total = _total(_tree(tmp_path, "orin-nx", p=9.0))
    assert src.total_rail == "VDD_IN" and total == pytest.approx(9.0, rel=1e-3)
    src, total = _total(_tree(tmp_path, "agx-xavier", p=9.0))
    assert src.total_rail is None and len(src.total_members) == 6
    assert total == pytest.approx(9.0, rel=1e-3)
    assert "documented sum" in src.boundary and src.total_complete


# ---------------------------------------------------------------- a missing input rail
def _break_vdd_in(root):
    d = os.path.join(root, "sys/bus/i2c/drivers/ina3221x/0-0041/iio:device1")
    os.unlink(os.path.join(d, "in_power0_input"))  # VDD_IN is channel 0 of 0x41


def test_missing_input_rail_is_never_a_silent_sum(tmp_path):
    root = _tree(tmp_path, "tx2", p=8.0)
    _break_vdd_in(root)
    src, total = _total(root)
    assert "VDD_IN" not in src.rails
    assert not src.total_complete
    assert src.boundary.startswith("partial: sum of module sub-rails")
    assert "VDD_MUX" not in src.boundary  # the carrier stays out even now
    assert total == pytest.approx(8.0 * (0.25 + 0.15 + 0.02 + 0.20 + 0.10), rel=1e-3)
    assert src.warnings and "VDD_IN" in src.warnings[0] and "partial" in src.warnings[0]
    rc, doc = agent_main(["power", "--fs-root", root] + POWER, str(tmp_path / "p.json"))
    assert rc == 0
    assert doc["energy_total_complete"] is False
    assert doc["energy_boundary"].startswith("partial")
    assert any("VDD_IN missing" in w for w in doc["warnings"])
    rc, doc = agent_main(["power", "--fs-root", root, "--require-energy"] + POWER,
                         str(tmp_path / "q.json"))
    assert rc == 5 and doc["error_kind"] == "no_power_source"
    assert "partial: sum of module sub-rails" in doc["error"]


def test_unknown_board_without_input_rail_says_what_it_sums(tmp_path):
    root = _tree(tmp_path, "orin", p=10.0)
    with open(os.path.join(root, "proc/device-tree/model"), "w") as f:
        f.write("Some other board\x00")
    os.unlink(os.path.join(root, "proc/device-tree/compatible"))
    src, total = _total(root)
    assert total == pytest.approx(11.2, rel=1e-3)  # everything read: nesting unknown
    assert not src.total_complete and "board model not in the rail tables" in src.boundary
    with pytest.raises(AgentError) as e:
        make_source("auto", root, require=True)
    assert e.value.kind == "no_power_source"


def test_rails_option_states_its_boundary(tmp_path):
    root = _tree(tmp_path, "orin", p=10.0)
    src, _ = make_source("hwmon", root, rails=["VDD_GPU_SOC", "VDD_CPU_CV"])
    assert src.total_of(src.read()) == pytest.approx(7.0, rel=1e-3)
    assert src.boundary.startswith("rails chosen with --rails")
    src, _ = make_source("hwmon", root, rails=["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"])
    assert src.total_complete and src.total_of(src.read()) == pytest.approx(10.0, rel=1e-3)


# ---------------------------------------------------------------- tegrastats formats
def _fixture(name):
    lines = open(os.path.join(FIXTURES, name)).read().splitlines()
    expect = dict(kv.split("=") for kv in lines[[i for i, ln in enumerate(lines)
                                                 if ln.startswith("# expect:")][0]]
                  .split(":", 1)[1].split())
    data = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    return data, dict((k, float(v)) for k, v in expect.items())


@pytest.mark.parametrize("name", sorted(os.listdir(FIXTURES)))
def test_tegrastats_fixture_formats(name):
    data, expect = _fixture(name)
    for line in data:
        pairs = parse_tegrastats_line(line)
        assert dict(pairs) == expect, line
        assert [n for n, _ in pairs] == list(expect)  # order kept, NC left out


@pytest.mark.parametrize("layout,style", [("tx2", "jp4"), ("orin", "jp5"), ("orin", "jp6"),
                                          ("nano", "jp4"), ("thor", "jp6")])
def test_tegrastats_source_total_per_board_and_format(tmp_path, layout, style):
    root = _tree(tmp_path, layout, p=10.0, tools=True, tegrastats_style=style)
    src, notes = make_source("tegrastats", root, interval_s=0.02)
    src.open()
    try:
        vals = src.read()
    finally:
        src.close()
    assert "NC" not in src.rails
    assert src.total_complete, src.boundary
    assert src.total_of(vals) == pytest.approx(10.0, rel=2e-3)
    if layout == "tx2":
        assert not set(src.rails) & TX2_CARRIER_RAILS  # tegrastats does not print them
        assert src.refresh_s() == pytest.approx(0.42)  # taken from the same INA3221s
    if layout == "thor":
        assert src.total_rail == "VIN"


def test_tegrastats_stand_in_prints_the_documented_formats(tmp_path):
    import subprocess
    for style, pattern in (("jp4", " VDD_IN 10000/10000"), ("jp5", " VDD_IN 10000mW/10000mW"),
                           ("jp6", " VDD_IN 10000mW/10000mW/10000mW")):
        root = _tree(tmp_path / style, "orin-nx", p=10.0, tools=True, tegrastats_style=style)
        p = subprocess.Popen([os.path.join(root, "usr/bin/tegrastats"), "--interval", "10"],
                             stdout=subprocess.PIPE)
        line = p.stdout.readline().decode()
        p.kill()
        p.wait()
        p.stdout.close()
        assert pattern in line, (style, line)
