"""The worker's verify loop on the CPU: each seed's reference output is computed once per shape and
shared by the variants, while inputs are drawn afresh for each variant, so one that writes into its
input cannot make the next one look wrong."""
import json

from testenv import FIXTURES
from pipeline import build, supervise, verify

REF = FIXTURES / "faulty" / "kernels" / "faults" / "reference.py"
CLOBBER = '''
import torch, torch.nn as nn
class ModelNew(nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.eps = eps
    def forward(self, x):
        y = x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.eps)
        x.zero_()          # writes into its input after computing a correct output
        return y
'''
GOOD = CLOBBER.replace("x.zero_()", "pass")


def test_reference_outputs_are_shared_and_inputs_fresh(tmp_path, monkeypatch):
    (tmp_path / "clobber.py").write_text(CLOBBER)
    (tmp_path / "good.py").write_text(GOOD)
    params = {"batch_size": 2, "features": 6, "dim1": 5, "dim2": 7}
    variants = [{"index": i, "name": n, "file": str(tmp_path / f"{n}.py"), "config": {}}
                for i, n in enumerate(["clobber", "good"])]
    job = {"op": "inplace_t", "reference": str(REF), "device": "cpu", "seeds": [0, 1], "params": params}
    shape = {"id": "tiny", "index": 0, "params": params, "dtype": "float32",
             "tolerance": {"rtol": 1e-5, "atol": 1e-5}, "verify": variants, "time": []}
    made = []
    real_model = build.reference_model

    def counting(ref_mod, device):
        model = real_model(ref_mod, device)
        forward = model.forward
        model.forward = lambda *a: made.append(1) or forward(*a)
        return model
    monkeypatch.setattr(build, "reference_model", counting)
    ref_mod = build.load_reference(job)
    events = tmp_path / "events.jsonl"
    passed = verify.verify_variants(job, shape, ref_mod, build.reference_model(ref_mod, "cpu"),
                                    supervise.Events(str(events)))
    results = {e["result"]["name"]: e["result"] for e in map(json.loads, events.read_text().splitlines())
               if e["event"] == "variant"}
    assert {n: r["status"] for n, r in results.items()} == {"clobber": "ok", "good": "ok"}, results
    assert set(passed) == {"clobber", "good"}
    assert len(made) == 2          # one reference run per seed, not one per seed and variant
    assert all(c["max_abs_err"] < 1e-5 for r in results.values() for c in r["checks"])
