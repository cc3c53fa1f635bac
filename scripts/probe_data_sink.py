"""Can MindSpore sink a dataset on this device? Runs each route to MindSpore's data sinking on a small
Dense net and prints one line per route: what happened (the exact error, or the fallback) and its timing.

    python scripts/probe_data_sink.py [--device CPU] [--steps 8]

Routes: ``ms.data_sink`` (the functional API), ``DatasetHelper(dataset_sink_mode=True)`` +
``connect_network_with_dataset`` (what Model uses), ``Model.train(dataset_sink_mode=True)``, and,
for the record only, the private pieces under them (``_exec_datagraph`` + ``ops.GetNext``) with the
platform check skipped. Each route runs in its own interpreter (a sink queue is process-wide, and a
route that hangs is cut by a timeout). docs/data_sink.md holds the numbers measured here.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROUTES = ("data_sink", "dataset_helper_graph", "dataset_helper_pynative", "model_train", "model_train_host",
          "private_getnext")


def _dataset(steps, batch=4):
    import numpy as np
    from mindspore import dataset as ds
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((steps * batch, 16)).astype(np.float32),
            "y": rng.standard_normal((steps * batch, 4)).astype(np.float32)}
    return ds.NumpySlicesDataset(data=data, shuffle=False).batch(batch)


def _train_net():
    import mindspore as ms
    from mindspore import nn
    ms.set_seed(0)
    net = nn.Dense(16, 4)
    loss = nn.WithLossCell(net, nn.MSELoss())
    return net, nn.TrainOneStepCell(loss, nn.SGD(net.trainable_params(), 0.1))


def _first_line(exc):
    """The first line of MindSpore's message that says something (its C++ errors open with a ruler and
    a '- Kernel select failed:' heading)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    text = next((ln for ln in lines if ln and not ln.startswith("-") and not ln.endswith(":")), "")
    return f"{type(exc).__name__}: {text}"


def run_route(route, device, steps):
    """One route in this interpreter. Returns a dict: outcome ("sinks", "falls back to host feeding",
    "host-fed" (the model_train_host baseline), "refused"), detail (the error's first line, or what ran),
    seconds (the route's own time, after start-up)."""
    import mindspore as ms
    from mindspore import ops
    ms.set_device(device)
    mode = ms.PYNATIVE_MODE if route == "dataset_helper_pynative" else ms.GRAPH_MODE
    ms.set_context(mode=mode)
    dataset = _dataset(steps)
    net, train_step = _train_net()
    start = time.perf_counter()
    try:
        if route == "data_sink":
            sink = ms.data_sink(train_step, dataset, sink_size=steps, jit_config=ms.JitConfig())
            loss = sink()
            return dict(outcome="sinks", detail=f"loss {float(loss.asnumpy()):.6f}",
                        seconds=time.perf_counter() - start)
        if route.startswith("dataset_helper"):
            helper = ms.DatasetHelper(dataset, dataset_sink_mode=True, sink_size=steps)
            kind = type(helper.iter).__name__
            sunk = ms.connect_network_with_dataset(train_step, helper)
            inputs = next(iter(helper))
            fed = "no inputs (the network reads the queue)" if not inputs else f"{len(inputs)} host tensors per step"
            outcome = "sinks" if sunk is not train_step else "falls back to host feeding"
            return dict(outcome=outcome, detail=f"iterator {kind}, {fed}", seconds=time.perf_counter() - start)
        if route.startswith("model_train"):
            from mindspore.train import Model
            from mindspore.train.callback import Callback

            class Count(Callback):
                calls = 0

                def on_train_step_end(self, run_context):
                    Count.calls += 1

            model = Model(train_step)
            sink = route == "model_train"
            model.train(1, dataset, callbacks=[Count()], dataset_sink_mode=sink, sink_size=steps if sink else -1)
            # sunk, the step-end callback runs once per sink of `steps` steps; host-fed, once per step
            outcome = "sinks" if Count.calls < steps else ("falls back to host feeding" if sink else "host-fed")
            return dict(outcome=outcome, detail=f"{Count.calls} step-end callbacks for {steps} steps",
                        seconds=time.perf_counter() - start)
        if route == "private_getnext":
            from mindspore.train._utils import _exec_datagraph, _get_types_and_shapes
            types, shapes = _get_types_and_shapes(dataset)
            transfer = _exec_datagraph(dataset, steps)
            transfer.send(-1)
            get_next = ops.GetNext(types, shapes, len(types), transfer.queue_name)

            @ms.jit
            def sunk_step():
                x, y = get_next()
                return train_step(x, y)

            loss = sunk_step()
            return dict(outcome="sinks", detail=f"loss {float(loss.asnumpy()):.6f}",
                        seconds=time.perf_counter() - start)
        raise ValueError(f"unknown route {route}")
    except (RuntimeError, ValueError, TypeError) as exc:
        return dict(outcome="refused", detail=_first_line(exc), seconds=time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--route", nargs="+", choices=ROUTES,
                        help="run these routes in this interpreter, one RESULT line of JSON each")
    args = parser.parse_args(argv)
    if args.route:
        for route in args.route:
            print("RESULT " + json.dumps(dict(route=route, **run_route(route, args.device, args.steps))), flush=True)
        return 0
    import mindspore as ms
    print(f"MindSpore {ms.__version__}, device {args.device}, {args.steps} steps per sink")
    for route in ROUTES:
        cmd = [sys.executable, os.path.abspath(__file__), "--route", route, "--device", args.device,
               "--steps", str(args.steps)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if found:
                res = json.loads(found[-1][len("RESULT "):])
            else:
                tail = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()][-3:]
                res = dict(outcome="error", detail=f"exit {proc.returncode}: " + " | ".join(tail), seconds=None)
        except subprocess.TimeoutExpired:
            res = dict(outcome="error", detail=f"no answer within {args.timeout:.0f} s (killed)", seconds=None)
        secs = f"{res['seconds']:.3f} s in-route" if res.get("seconds") is not None else "-"
        print(f"{route:24s} {res['outcome']:28s} {secs:16s} ({time.perf_counter() - start:.1f} s with start-up)  "
              f"{res['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
