"""The serving half of `make demo` against a really pushed model: model server (REST +
gRPC), the pipeline's release (user embeddings, catalogue), sidecar with filters; every answer
checked, all shut down.  The demo's catalogue refresh is tests/test_release_cycle.py's subject."""
import pytest

from serving import demo

pytestmark = pytest.mark.e2e


def test_serving_demo_answers_respect_filters(pushed_model, tmp_path, capsys):
    config, model_base = pushed_model
    report = demo.run(config.data_dir, model_base, config.releases, str(tmp_path / "serving"))
    assert report["popularity_source"].startswith(f"release {report['release']} (model version ")
    assert report["rest_ni_top5"] == report["grpc_ni_top5"] and len(report["rest_ni_top5"]) == 5
    known = report["known user, rr, region+stock filters"]
    assert known["items"] and not known["degraded"]
    assert len(set(known["items"])) == len(known["items"])
    out = capsys.readouterr().out
    assert "every answer respects its filters" in out and "stopped" in out
