"""Kernel benchmarks: each fast kernel validated against the reference, then timed; step breakdown.

1. Validate, then time: every op on the training path, at the shapes of the
   default recipe (batch 128, 784-400-20), NumPy reference vs Numba backend.
   A kernel that disagrees with the reference beyond the dtype's tolerance
   is reported as FAILED and not timed.
2. The matmul three ways, at the training step's shapes: BLAS called from
   jitted code, the hand-written tiled kernel, the readable loops; and the
   whole training step with each (``numba_ops.set_matmul``).
3. Where the time of one training step goes: the eleven matrix products, the
   elementwise passes of the layers, the latent layer and the loss, the
   optimizer, and the rest (Python and dispatch), from timing each kernel
   alone at the step's shapes and the whole step.

Run:  python benchmarks/bench_kernels.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: I001  (sets sys.path so numpyvae imports from the checkout)

N_THREADS = common.set_threads()

import numpy as np  # noqa: E402

from numpyvae import ops as R  # noqa: E402
from numpyvae.backend import get_backend  # noqa: E402
from numpyvae.gradcheck import rel_error  # noqa: E402

TOL = {"float32": 1e-5, "float64": 1e-12}


def _inputs(dtype, B=128, D=common.INPUT, H=common.HIDDEN, L=common.LATENT, seed=0):
    rng = np.random.default_rng(seed)

    def a(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return {
        "x": (rng.random((B, D)) < 0.5).astype(dtype), "W1": a(D, H, scale=0.05), "b1": a(H),
        "h1": np.maximum(a(B, H), 0), "dh1": a(B, H), "W4": a(H, D, scale=0.05), "b4": a(D),
        "logits": a(B, D, scale=3), "dlogits": a(B, D), "h": a(B, 2 * L, scale=0.5),
        "eps": a(B, L), "dz": a(B, L), "dkl": np.full(B, 1 / B, dtype=dtype),
        "P": 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784,
    }


def kernel_cases(v):
    """(name, call(backend, fresh outputs) -> arrays) for the ops of a training step."""
    dtype = v["x"].dtype
    P = v["P"]
    rng = np.random.default_rng(1)
    flat = {k: rng.standard_normal(P).astype(dtype) for k in ("p", "g", "m")}
    flat["v"] = rng.random(P).astype(dtype)

    def buffers(ops, **arrays):
        """Output arrays for the fast path to write into (the reference returns fresh ones)."""
        return arrays if ops.NAME == "numba" else {}

    def linear_forward(ops, out):
        return [ops.linear_forward(v["x"], v["W1"], v["b1"], "relu",
                                   **buffers(ops, out=out["B_H"]))]

    def linear_backward_first(ops, out):
        dW, db = out["D_H"], out["H"]
        dW[...] = 0
        db[...] = 0
        ops.linear_backward(v["dh1"], v["x"], v["W1"], v["h1"], dW, db, "relu", need_dx=False)
        return [dW, db]

    def linear_backward_last(ops, out):
        dW, db = out["H_D"], out["D"]
        dW[...] = 0
        db[...] = 0
        dx = ops.linear_backward(v["dlogits"], v["h1"], v["W4"], v["logits"], dW, db,
                                 "identity", **buffers(ops, dx=out["B_H"]))
        return [dx, dW, db]

    def latent_forward(ops, out):
        return list(ops.latent_forward(v["h"], v["eps"], **buffers(ops, z=out["B_L"],
                                                                   kl=out["B"])))

    def latent_backward(ops, out):
        return [ops.latent_backward(v["dz"], v["h"], v["eps"], v["dkl"],
                                    **buffers(ops, dh=out["B_2L"]))]

    def bernoulli(ops, out):
        return list(ops.bernoulli_nll_and_grad(v["logits"], v["x"], 1 / 128,
                                               **buffers(ops, nll=out["B"],
                                                         dlogits=out["B_D"])))

    def adam(ops, out):
        p, m, w = out["P1"], out["P2"], out["P3"]
        p[...] = flat["p"]
        m[...] = flat["m"]
        w[...] = flat["v"]
        ops.adam_update(p, flat["g"], m, w, 1e-3, 0.9, 0.999, 1e-8, 0.0, 7, False)
        return [p, m, w]

    return [("linear_forward (784->400, relu)", linear_forward),
            ("linear_backward (first layer, no dx)", linear_backward_first),
            ("linear_backward (400->784, identity)", linear_backward_last),
            ("latent_forward", latent_forward), ("latent_backward", latent_backward),
            ("bernoulli_nll_and_grad", bernoulli), ("adam_update (all parameters)", adam)]


def _outputs(v):
    B, D, H, L, P = 128, common.INPUT, common.HIDDEN, common.LATENT, v["P"]
    dtype = v["x"].dtype
    shapes = {"B_H": (B, H), "D_H": (D, H), "H_D": (H, D), "H": (H,), "D": (D,), "B_L": (B, L),
              "B": (B,), "B_2L": (B, 2 * L), "B_D": (B, D), "P1": (P,), "P2": (P,), "P3": (P,)}
    return {k: np.zeros(s, dtype=dtype) for k, s in shapes.items()}


def validate_then_time(dtype, repeats, number):
    """Each case: compare the Numba backend with the reference, then time both.

    All reference timings run first, then all Numba ones, with a pause
    between: each library's idle threads spin for a while after its last
    call, and would otherwise slow down the other's.
    """
    N = get_backend("numba")
    v = _inputs(dtype)
    rows = []
    for name, call in kernel_cases(v):
        ref_out, fast_out = _outputs(v), _outputs(v)
        want = [a.copy() for a in call(R, ref_out)]
        got = [a.copy() for a in call(N, fast_out)]
        err = max(rel_error(g, w) for g, w in zip(got, want, strict=True))
        rows.append({"kernel": name, "dtype": dtype, "rel_error": err,
                     "valid": err <= TOL[dtype], "call": call, "outs": (ref_out, fast_out)})
    for key, ops, index in (("reference_us", R, 0), ("numba_us", N, 1)):
        time.sleep(0.3)
        for row in rows:
            if row["valid"]:
                out = row["outs"][index]
                row[key] = 1e6 * common.median_time(lambda c=row["call"], o=out, m=ops: c(m, o),
                                                    repeats, number)[0]
    for row in rows:
        del row["call"], row["outs"]
        if row["valid"]:
            row["speedup"] = row["reference_us"] / row["numba_us"]
    return rows


# --------------------------------------------------------------------------
# The matmul three ways
# --------------------------------------------------------------------------

#: The products of one training step at batch 128: (what, M, K, N, transpose of a).
STEP_PRODUCTS = [
    ("x @ W1 (forward, 784->400)", 128, 784, 400, False),
    ("h1.T @ da (dW, 400->784 layer)", 400, 128, 784, True),
    ("da @ W4.T (dx, 400->784 layer)", 128, 784, 400, False),
]


def matmul_methods(dtype, repeats, number):
    """Each product of STEP_PRODUCTS by each method, validated, then timed method by method."""
    from numpyvae.fast import numba_blas as NB
    from numpyvae.fast import numba_kernels as K

    N = get_backend("numba")
    rng = np.random.default_rng(2)
    T = np.dtype(dtype).type
    blas = N._GEMM[np.dtype(dtype)]
    methods = {
        "blas, block per thread": lambda a, b, c: N._with_blas(
            K.gemm_parallel, T(1), a, b, T(0), c, blas),
        "blas, its own threads": lambda a, b, c: NB.gemm_blas(T(1), a, b, T(0), c, blas),
        "tiled (numba)": lambda a, b, c: K.matmul_tiled(T(1), a, b, T(0), c),
        "loops (numba)": lambda a, b, c: K.matmul_loops(T(1), a, b, T(0), c),
        "numpy @": lambda a, b, c: np.matmul(a, b, out=c),
    }
    products = []
    for what, M, Kd, Nn, transposed in STEP_PRODUCTS:
        a = rng.standard_normal((Kd, M) if transposed else (M, Kd)).astype(dtype)
        a = a.T if transposed else a
        b = rng.standard_normal((Kd, Nn)).astype(dtype)
        products.append((what, a, b, a.astype(np.float64) @ b))
    rows = []
    for name, method in methods.items():
        time.sleep(0.3)  # let the previous method's threads go idle
        for what, a, b, want in products:
            c = np.empty(want.shape, dtype=dtype)
            method(a, b, c)
            err = rel_error(c, want)
            t = common.median_time(lambda m=method, a=a, b=b, c=c: m(a, b, c), repeats, number)[0]
            M, Kd = a.shape
            Nn = b.shape[1]
            rows.append({"product": what, "method": name, "dtype": dtype, "M": M, "K": Kd,
                         "N": Nn, "rel_error": err, "valid": err <= 10 * TOL[dtype],
                         "us": 1e6 * t, "gflops": 2 * M * Kd * Nn / t / 1e9})
    return sorted(rows, key=lambda r: [p[0] for p in products].index(r["product"]))


def step_with_each_matmul(dtype, seconds):
    import numpyvae

    N = get_backend("numba")
    x = (np.random.default_rng(3).random((128, common.INPUT)) < 0.5).astype(dtype)
    out = {}
    for method in N.MATMUL_METHODS:
        model = numpyvae.VAE(common.INPUT, (common.HIDDEN,), common.LATENT, dtype=dtype,
                             backend="numba", seed=0)
        opt = numpyvae.Adam(model.params, backend="numba")
        old = N.set_matmul(method)
        try:
            def step(model=model, opt=opt):
                model.loss_and_grads(x)
                opt.step(model.grads)
            step()
            t1 = common.median_time(step, repeats=1, number=1)[0]
            number = max(2, int(seconds / max(t1, 1e-6)))
            out[method] = 1e3 * common.median_time(step, repeats=5, number=number)[0]
        finally:
            N.set_matmul(old)
    return out


# --------------------------------------------------------------------------
# Where the time of a training step goes
# --------------------------------------------------------------------------


def step_breakdown(dtype, repeats, number, batch=128):
    """Milliseconds per step in each part, from kernels timed alone at the step's shapes."""
    import numpyvae
    from numpyvae.fast import numba_kernels as K

    N = get_backend("numba")
    model = numpyvae.VAE(common.INPUT, (common.HIDDEN,), common.LATENT, dtype=dtype,
                         backend="numba", seed=0)
    opt = numpyvae.Adam(model.params, backend="numba")
    x = (np.random.default_rng(4).random((batch, common.INPUT)) < 0.5).astype(dtype)

    def step():
        model.loss_and_grads(x)
        opt.step(model.grads)

    total = common.median_time(step, repeats, number, warmup=3)[0]

    T = np.dtype(dtype).type
    gemm = N._GEMM[np.dtype(dtype)]
    rng = np.random.default_rng(5)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    # Every product of the step: forward x W; backward x.T da and da W.T (not for the first
    # layer), timed alone as the kernels run them (one block per thread, BLAS single-threaded).
    layers = (model.encoder[0], model.encoder[1], model.decoder[0], model.decoder[1])
    matmuls = linear = 0.0
    for layer in layers:
        I, O = layer.in_features, layer.out_features
        products = [((batch, I), (I, O)), ((I, batch), (batch, O))]
        if not layer.skip_input_grad:
            products.append(((batch, O), (O, I)))
        for sa, sb in products:
            a, b, c = rand(*sa), rand(*sb), np.empty((sa[0], sb[1]), dtype)
            matmuls += common.median_time(
                lambda a=a, b=b, c=c: N._with_blas(K.gemm_parallel, T(1), a, b, T(0), c, gemm),
                repeats, number)[0]
        # The fused layer ops on the same shapes: products plus bias and activation passes.
        x_in, W, bias = rand(batch, I), layer.params["W"], layer.params["b"]
        y, dy, dx = np.empty((batch, O), dtype), rand(batch, O), np.empty((batch, I), dtype)
        dW, db = np.zeros_like(W), np.zeros_like(bias)
        linear += common.median_time(
            lambda x_in=x_in, W=W, bias=bias, y=y, layer=layer: N.linear_forward(
                x_in, W, bias, layer.activation, out=y), repeats, number)[0]
        linear += common.median_time(
            lambda x_in=x_in, W=W, y=y, dy=dy, dW=dW, db=db, dx=dx, layer=layer:
            N.linear_backward(dy, x_in, W, y, dW, db, layer.activation, dx=dx,
                              need_dx=not layer.skip_input_grad), repeats, number)[0]
    parts = {"matmuls (11 products)": matmuls,
             "bias, activation and their gradients": max(linear - matmuls, 0.0)}

    B, L = batch, common.LATENT
    h, dh = rand(B, 2 * L), rand(B, 2 * L)
    eps, z, dz, kl = rand(B, L), rand(B, L), rand(B, L), rand(B)
    dkl = np.full(B, 1 / B, dtype=dtype)
    logits, nll, dlogits = rand(B, common.INPUT), rand(B), rand(B, common.INPUT)
    cost = common.median_time(lambda: K.latent_forward(h, eps, z, kl), repeats, number)[0]
    cost += common.median_time(lambda: K.latent_backward(dz, h, eps, dkl, 0.0, dh),
                               repeats, number)[0]
    parts["latent layer (sample, KL, gradients)"] = cost
    parts["Bernoulli loss and gradient"] = common.median_time(
        lambda: K.bernoulli_nll_and_grad(logits, x, 1 / B, nll, dlogits), repeats, number)[0]

    flat = [np.zeros(model.num_params, dtype) for _ in range(4)]
    cost = common.median_time(lambda: N.adam_update(*flat, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3, False),
                              repeats, number)[0]
    cost += common.median_time(lambda: model.zero_grad(), repeats, number)[0]
    parts["optimizer (Adam) and zeroing gradients"] = cost
    parts["Python, checks and dispatch (the rest)"] = max(total - sum(parts.values()), 0.0)
    return {"total_ms": 1e3 * total, "parts_ms": {k: 1e3 * t for k, t in parts.items()},
            "step_flops": common.step_flops(batch)}


def run(quick=False, verbose=True):
    say = print if verbose else (lambda *a, **k: None)
    repeats, number = (3, 3) if quick else (9, 20)
    payload = {"benchmark": "kernels", "quick": quick, "machine": common.machine(),
               "validate_then_time": [], "matmul": [], "step_by_matmul_ms": {},
               "breakdown": {}}
    for dtype in ("float32",) if quick else ("float32", "float64"):
        rows = validate_then_time(dtype, repeats, number)
        payload["validate_then_time"] += rows
        say(f"\nkernels, {dtype} (validated against the reference, then timed)")
        for r in rows:
            if r["valid"]:
                say(f"  {r['kernel']:<40} ok (rel err {r['rel_error']:.1e})  "
                    f"numpy {r['reference_us']:8.1f} us  numba {r['numba_us']:8.1f} us  "
                    f"x{r['speedup']:.1f}")
            else:
                say(f"  {r['kernel']:<40} FAILED validation: rel err {r['rel_error']:.2e}")
    # The breakdown first: the hand-written matmuls below keep every core busy for
    # seconds, and the steps timed right after them ran up to 30% slower.
    for batch in (128,) if quick else (32, 128, 512):
        b = step_breakdown("float32", repeats, number if batch < 512 else number // 4, batch)
        payload["breakdown"][str(batch)] = b
        say(f"\nwhere a step goes (batch {batch}, float32): {b['total_ms']:.2f} ms")
        for part, ms in b["parts_ms"].items():
            say(f"  {part:<44}{ms:7.3f} ms  {100 * ms / b['total_ms']:5.1f}%")
    for dtype in ("float32",) if quick else ("float32", "float64"):
        rows = matmul_methods(dtype, repeats, max(1, number // 4))
        payload["matmul"] += rows
        say(f"\nmatmul, {dtype}")
        for r in rows:
            say(f"  {r['product']:<34}{r['method']:<24}{r['us']:9.1f} us "
                f"{r['gflops']:7.1f} GFLOP/s  {'ok' if r['valid'] else 'FAILED'}")
    payload["step_by_matmul_ms"] = step_with_each_matmul("float32", 0.1 if quick else 0.5)
    say("\ntraining step (batch 128, float32) by matmul: " + ", ".join(
        f"{m} {t:.2f} ms" for m, t in payload["step_by_matmul_ms"].items()))
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", default="kernels", help="results file name (without .json)")
    args = parser.parse_args(argv)
    payload = run(args.quick)
    print(f"saved {common.save_json(args.out, payload)}")


if __name__ == "__main__":
    main()
