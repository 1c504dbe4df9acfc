"""Experiment (docs/benchmarks.md, "Tried and dropped"): a ROME edit on the worker's long lane while another
thread predicts without pause on the interactive lane, against each alone. Run it as is and with
OMP_WAIT_POLICY=PASSIVE, alternating; ``one`` instead of ``two`` runs each prediction on one thread.

    PYTHONPATH=. python benchmarks/experiments/lane_contention.py two
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python benchmarks/experiments/lane_contention.py two
"""
import sys, time, threading, statistics, torch, os
torch.set_num_threads(2)
from knlab.core.models import load_model
from knlab.serve.worker import ModelWorker, INTERACTIVE, LONG
from knlab.studies import edit_report as E
from knlab.methods.predict import predict
mode = sys.argv[1]
w = ModelWorker(device="cpu"); w.add_model(load_model("smollm2-135m", device="cpu"))
def pred():
    return w.run("smollm2-135m", [], predict, "The capital of France is", 3, lane=INTERACTIVE)
def one_thread_predict(lm, *a):
    torch.set_num_threads(1)
    try: return predict(lm, *a)
    finally: torch.set_num_threads(2)
def pred1():
    return w.run("smollm2-135m", [], one_thread_predict, "The capital of France is", 3, lane=INTERACTIVE)
f = pred1 if mode == "one" else pred
w.run("smollm2-135m", [], E.edit, "rome", "The capital of Austria is", "Austria", "Baku")  # warm
alone = []
for _ in range(5):
    t=time.perf_counter(); f(); alone.append(time.perf_counter()-t)
t=time.perf_counter(); w.run("smollm2-135m", [], E.edit, "rome", "The capital of Algeria is", "Algeria", "Vienna"); edit_alone=time.perf_counter()-t
lat=[]; done=threading.Event(); res={}
def editor():
    t=time.perf_counter(); w.run("smollm2-135m", [], E.edit, "rome", "The capital of Algeria is", "Algeria", "Vienna"); res["edit"]=time.perf_counter()-t; done.set()
th=threading.Thread(target=editor); th.start(); time.sleep(0.5)
while not done.is_set():
    t=time.perf_counter(); f(); lat.append(time.perf_counter()-t); time.sleep(0.3)
th.join()
lat.sort()
print(f"{mode}: predict alone median {statistics.median(alone):.3f}; during edit n={len(lat)} median {statistics.median(lat):.3f} max {lat[-1]:.3f}; edit alone {edit_alone:.1f} s, with predicts {res['edit']:.1f} s")
