"""The reward-slope summary on hand-made metrics, against slopes and pooled means worked out by hand."""

import json
import math

import pytest


@pytest.fixture(scope="module")
def reward_slopes(bench_script):
  return bench_script("reward_slopes")


def workdir(tmp_path, name, rewards, random_start=None):
  """A training workdir: two SFT records, then one RL record per reward (steps 1, 2, ...)."""
  d = tmp_path / name
  d.mkdir()
  rows = [{"step": -1, "sft/loss": 1.0}, {"step": 0, "sft/loss": 0.5}]
  for i, r in enumerate(rewards):
    row = {"step": i + 1, "loss/pg_loss": 0.0, "reward/overall": r}
    if random_start is not None:
      row["reward_random_start/overall"] = random_start[i]
    rows.append(row)
  (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  return d


def test_one_run_slope_by_hand(reward_slopes, tmp_path):
  # x = 1..5, y = 1 3 2 5 4: Sxy = 8, Sxx = 10, slope 0.8; residuals -0.4 0.8 -1.0 1.2 -0.6, SSR 3.6, s^2 = 1.2.
  rows = reward_slopes.rl_rows(workdir(tmp_path, "a", [1, 3, 2, 5, 4]))
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]  # the SFT records are not RL steps
  fit = reward_slopes.slope(rows, "reward/overall")
  assert fit["n"] == 5
  assert fit["slope"] == pytest.approx(0.8)
  assert fit["se"] == pytest.approx(math.sqrt(1.2 / 10))
  assert fit["resid_sd"] == pytest.approx(math.sqrt(1.2))
  assert reward_slopes.slope(rows, "reward_random_start/overall") is None  # not logged by this run


def test_pooled_is_the_inverse_variance_mean(reward_slopes, tmp_path):
  up = reward_slopes.slope(reward_slopes.rl_rows(workdir(tmp_path, "up", [1, 3, 2, 5, 4])), "reward/overall")
  # y = 5 4 2 3 1: Sxy = -9, slope -0.9; residuals 0.2 0.1 -1.0 0.9 -0.2, SSR 1.9, se^2 = (1.9 / 3) / 10.
  down = reward_slopes.slope(reward_slopes.rl_rows(workdir(tmp_path, "down", [5, 4, 2, 3, 1])), "reward/overall")
  assert down["slope"] == pytest.approx(-0.9)
  w_up, w_down = 10 / 1.2, 10 / (1.9 / 3)
  p = reward_slopes.pooled([up, down])
  assert p["slope"] == pytest.approx((w_up * 0.8 - w_down * 0.9) / (w_up + w_down))
  assert p["se"] == pytest.approx(1 / math.sqrt(w_up + w_down))
  assert (p["runs"], p["positive"], p["sign_test_p"]) == (2, 1, 1.0)
  assert "steps_for_z2_one_run" not in p  # no steps make a falling mean rise

  twice = reward_slopes.pooled([up, up])
  assert twice["se"] == pytest.approx(math.sqrt(1.2 / 10) / math.sqrt(2))
  # (2 * sd * sqrt(12) / slope)^(2/3) with sd = sqrt(1.2): 9.49^(2/3) = 4.48, so 5 steps.
  assert twice["steps_for_z2_one_run"] == 5


def test_main_writes_per_run_and_pooled(reward_slopes, tmp_path, monkeypatch, capsys):
  a = workdir(tmp_path, "a", [1, 3, 2, 5, 4], random_start=[0, 1, 1, 2, 2])
  b = workdir(tmp_path, "b", [5, 4, 2, 3, 1], random_start=[2, 2, 1, 1, 0])
  out = tmp_path / "out" / "slopes.json"
  monkeypatch.setattr("sys.argv", ["reward_slopes.py", "--out", str(out), str(a), str(b)])
  reward_slopes.main()
  printed = json.loads(capsys.readouterr().out)
  assert json.loads(out.read_text()) == printed
  assert set(printed["per_run"]) == {str(a), str(b)}
  assert printed["per_run"][str(a)]["reward_random_start/overall"]["slope"] == pytest.approx(0.5)
  assert set(printed["pooled"]) == {"reward/overall", "reward_random_start/overall"}


def test_a_workdir_without_metrics_is_named(reward_slopes, tmp_path, monkeypatch):
  monkeypatch.setattr("sys.argv", ["reward_slopes.py", str(tmp_path)])
  with pytest.raises(SystemExit, match="no metrics.jsonl"):
    reward_slopes.main()
