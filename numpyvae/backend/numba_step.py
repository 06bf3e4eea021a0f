"""The forward and backward pass of an MLP VAE (or autoencoder), and Adam, in one kernel call.

The per-op path (:mod:`numpyvae.backend.numba_ops`) runs each layer's
forward and backward as its own kernel, called from Python: about twenty
calls per step, each checking its arguments, switching BLAS's threads and
finding its work buffers. At batch 32 that Python costs about as much as
the arithmetic it calls.

:func:`mlp_step` runs the same sequence of kernels from jitted code, in
one call from Python: each layer's forward (:func:`~.numba_kernels.linear_forward`,
one block of the output per thread), the latent layer, the likelihood and
its gradient, and back through every layer. The layers' products are cut
between threads exactly as on the per-op path (by the longer side of each
output, into one block per thread of Numba's pool), so the big products
run at the same speed; what goes is the Python between them. Three
differences, each measured:

* layers whose product is small (the latent layer's ``400 x 40`` and
  ``20 x 400`` in the default model) run on one thread: at these sizes
  starting a parallel region costs more than the arithmetic it shares;
* the gradients are written, not accumulated (BLAS with ``beta = 0``), so
  no pass zeroes them first;
* ``da = dy * f'(y)``, the gradient before a layer's activation, is
  written over ``dy`` (each element is read before it is written, by the
  thread that writes it), so two buffers of gradients ping-pong back
  through the network.

With Adam (or AdamW) as the optimizer, each layer's weights take their
step as soon as that layer's backward is done, while the gradient is still
in cache (:func:`adam_span`, the per-op path's Adam kernel on the layer's
slice of the flat buffers): the step is then one call in all.

The blocks depend on the shapes and the pool size only, never on how many
threads run, so the step gives the same bits on one thread or on all
(``tests/test_threads.py``); it agrees with the per-op path to rounding
(``tests/test_fused_step.py``). The arithmetic of every piece is the
per-op kernels' own, and their docstrings (and the reference's) derive it.

The network is described to the kernel by plain arrays, not objects:

* ``params``, ``grads``: the flat buffers of every parameter and gradient
  (``model.flat_params``, ``model.flat_grads``), the same layout;
* ``layers``: an int64 table, one row per linear layer, encoder then
  decoder, ``[W offset, b offset, I, O, activation code, output offset in
  the work buffer]``; ``alphas``: each layer's leaky-ReLU slope;
* ``work``: (S,) scratch: every layer's output (B, O), the code ``z``
  (B, L) and the two ping-pong buffers of the gradient flowing back.
"""

from __future__ import annotations

import math

from .numba_blas import gemm_blas
from .numba_jit import jit_kernels
from .numba_kernels import (
    adam_update,
    bernoulli_nll_and_grad,
    bias_activation_block,
    bias_gradient,
    bias_gradient_block,
    gaussian_nll_and_grad,
    gemm_parallel,
    latent_backward,
    latent_forward,
    linear_forward,
)

#: Likelihood codes of :func:`mlp_step`.
BERNOULLI, GAUSSIAN = 0, 1
#: Columns of the ``layers`` table.
W_OFF, B_OFF, IN, OUT, ACT, Y_OFF = range(6)
#: A product of fewer multiply-adds than this (``B * I * O``) runs on one
#: thread. Measured on two cores: the latent layer's products at batch 128
#: (1 to 2 million) took 40-50 us split in two and 10-20 us on one thread.
SMALL_PRODUCT = 1 << 22


def view2d(flat, offset, rows, cols):
    """``flat[offset : offset + rows * cols]`` as a C-ordered (rows, cols) matrix."""
    return flat[offset:offset + rows * cols].reshape((rows, cols))


def layer_tasks(B, layer, tasks):
    """How many blocks this layer's products are cut into: ``tasks``, or 1 if they are small."""
    return 1 if B * layer[IN] * layer[OUT] < SMALL_PRODUCT else tasks


def layer_forward(inp, W, b, act, alpha, y, blas, tasks):
    """inp: (B, I), W: (I, O), b: (O,), y: (B, O); ``y = f(inp W + b)``."""
    T = y.dtype.type
    if tasks == 1:
        gemm_blas(T(1), inp, W, T(0), y, blas)
        bias_activation_block(y, b, act, alpha, 0, y.shape[1])
    else:
        linear_forward(inp, W, b, act, alpha, y, blas, tasks)


def layer_backward(dy, inp, W, y, dW, db, act, alpha, dx, need_dx, blas, tasks):
    """Backward of :func:`layer_forward`: dy, y: (B, O); inp: (B, I); W, dW: (I, O); db: (O,).

    ``dy`` becomes ``da = dy f'(y)`` in place; ``db = sum_n da[n]`` and
    ``dW = inp.T da`` are written (not accumulated); if ``need_dx``,
    ``dx = da W.T`` (B, I).
    """
    T = y.dtype.type
    for j in range(db.shape[0]):
        db[j] = T(0)
    if tasks == 1:
        bias_gradient_block(dy, y, act, alpha, dy, db, 0, dy.shape[1])
        gemm_blas(T(1), inp.T, dy, T(0), dW, blas)
        if need_dx:
            gemm_blas(T(1), dy, W.T, T(0), dx, blas)
    else:
        bias_gradient(dy, y, act, alpha, dy, db, tasks)
        gemm_parallel(T(1), inp.T, dy, T(0), dW, blas, tasks)
        if need_dx:
            gemm_parallel(T(1), dy, W.T, T(0), dx, blas, tasks)


def adam_span(params, grads, m, v, adam, start, size):
    """Adam on ``params[start : start + size]`` (and ``m``, ``v``) from ``grads``, in place.

    ``adam``: (8,) float64, the scalars of :func:`~.numba_kernels.adam_update`:
    ``[beta1, beta2, eps, weight_decay, decoupled, shrink, step_size, sqrt_bias2]``.
    """
    end = start + size
    adam_update(params[start:end], grads[start:end], m[start:end], v[start:end], adam[0],
                adam[1], adam[2], adam[3], adam[4] != 0.0, adam[5], adam[6], adam[7])


def total(a):
    """The sum of the 1-D ``a``, in float64 (finite if and only if every element is)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += float(a[i])
    return s


def mlp_step(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, likelihood, logvar,
             inv_var, logvar_off, scale, nll, kl, sums, work, pingpong, z_off, m, v, adam,
             blas, tasks):
    """Loss terms and gradients of a batch, every layer in turn; and Adam's step, if asked.

    params, grads: (P,); layers: (n_layers, 6), encoder layers first
    (``n_enc`` of them); alphas: (n_layers,); x: (B, D); eps: (B, L) and
    dkl: (B,), the KL's weight per example (``beta / B``), both unused
    unless ``vae``; likelihood: :data:`BERNOULLI`, or :data:`GAUSSIAN` with
    ``logvar`` (D,) or (1,) and ``inv_var`` like it (receives
    ``exp(-logvar)``) and, when the variance is learned, its gradient at
    ``logvar_off`` in ``grads`` (``logvar_off < 0``: fixed); scale: the
    likelihood gradient's weight (``1 / B``); nll, kl: (B,) per-example
    outputs (kl unused unless ``vae``), and sums: (2,) float64, their totals
    over the batch; work: (S,), laid out as the module
    docstring says; tasks: blocks per product (Numba's pool size).

    Adam: with ``m``, ``v`` like ``params`` and ``adam`` (8,) its scalars
    (:func:`adam_span`; an empty ``adam`` for none), each layer's weights
    take their Adam step as soon as the layer's backward is done (its
    gradient is still in cache, and the layers below need only their own
    weights), the learned variance's last. The parameters must be exactly
    the layers' and that variance. No step is taken unless every ``nll``
    and ``kl`` is finite (the per-op path does not step on such a batch
    either). Returns whether the step was taken.
    """
    B = x.shape[0]
    T = x.dtype.type
    n_layers = layers.shape[0]
    L = eps.shape[1]
    # Forward: encoder, latent layer, decoder.
    inp = x
    for k in range(n_layers):
        layer = layers[k]
        if k == n_enc and vae:  # the decoder starts from a sample of the code
            z = view2d(work, z_off, B, L)
            latent_forward(inp, eps, z, kl)
            inp = z
        y = view2d(work, layer[Y_OFF], B, layer[OUT])
        W = view2d(params, layer[W_OFF], layer[IN], layer[OUT])
        b = params[layer[B_OFF]:layer[B_OFF] + layer[OUT]]
        layer_forward(inp, W, b, layer[ACT], alphas[k], y, blas, layer_tasks(B, layer, tasks))
        inp = y
    # The likelihood: per-example NLL and its gradient in the decoder's output.
    D = inp.shape[1]
    dy = view2d(work, pingpong[0], B, D)
    if likelihood == BERNOULLI:
        bernoulli_nll_and_grad(inp, x, scale, nll, dy)
    else:
        learned = logvar_off >= 0
        dlogvar = grads[logvar_off:logvar_off + D] if learned else inv_var
        if learned:
            for d in range(D):
                dlogvar[d] = T(0)
        gaussian_nll_and_grad(inp, logvar, x, scale, inv_var, dlogvar, learned, nll, dy)
    sums[0] = total(nll)
    sums[1] = total(kl) if vae else 0.0
    step = adam.shape[0] > 0 and math.isfinite(sums[0]) and math.isfinite(sums[1])
    # Backward, in reverse; ``side`` says which ping-pong buffer holds dy.
    side = 0
    for k in range(n_layers - 1, -1, -1):
        layer = layers[k]
        if k == n_enc - 1 and vae:  # through the latent layer: dz -> dh = [dmu | dlogvar]
            dh = view2d(work, pingpong[1 - side], B, 2 * L)
            h = view2d(work, layer[Y_OFF], B, 2 * L)
            latent_backward(dy, h, eps, dkl, 0.0, dh)
            dy, side = dh, 1 - side
        if k == 0:
            inp = x
        elif k == n_enc and vae:
            inp = view2d(work, z_off, B, L)
        else:
            inp = view2d(work, layers[k - 1, Y_OFF], B, layers[k - 1, OUT])
        y = view2d(work, layer[Y_OFF], B, layer[OUT])
        W = view2d(params, layer[W_OFF], layer[IN], layer[OUT])
        dW = view2d(grads, layer[W_OFF], layer[IN], layer[OUT])
        db = grads[layer[B_OFF]:layer[B_OFF] + layer[OUT]]
        dx = view2d(work, pingpong[1 - side], B, layer[IN])
        layer_backward(dy, inp, W, y, dW, db, layer[ACT], alphas[k], dx, k > 0, blas,
                       layer_tasks(B, layer, tasks))
        if step:
            adam_span(params, grads, m, v, adam, layer[W_OFF], layer[IN] * layer[OUT])
            adam_span(params, grads, m, v, adam, layer[B_OFF], layer[OUT])
        dy, side = dx, 1 - side
    if step and likelihood == GAUSSIAN and logvar_off >= 0:
        adam_span(params, grads, m, v, adam, logvar_off, D)
    return step


jit_kernels(globals(), {
    "view2d": False, "layer_tasks": False, "layer_forward": False, "layer_backward": False,
    "adam_span": False, "total": False, "mlp_step": False,
})
