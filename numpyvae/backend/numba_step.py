"""A whole training step of an MLP VAE (or autoencoder) in two kernel calls: data-parallel.

The per-op path (:mod:`numpyvae.backend.numba_ops`) runs each layer's
forward and backward as its own parallel kernel: about twenty kernel calls
per step, each a parallel region whose threads meet at a barrier when it
ends. When another process keeps a core busy, every barrier waits for the
thread that was descheduled; at small batches the Python calls between the
kernels cost more than their arithmetic.

Here one kernel, :func:`mlp_step`, runs the whole forward and backward pass,
data-parallel: the batch is cut into as many chunks as there can be threads,
and chunk ``t`` (rows ``n0:n1``) goes through every layer, the latent layer
and the likelihood, and back, writing its own copy of every parameter
gradient (row ``t`` of ``parts``), with single-threaded BLAS for the
products. The second kernel, :func:`adam_update_parts` (or
:func:`sum_parts` before any other optimizer), sums the copies in order and
applies the update in one pass over the parameters. Two parallel regions
per step, two barriers. Fewer threads than chunks take several chunks each,
so the results do not depend on the thread count at all.

The network is described to the kernel by plain arrays, not objects:

* ``params``: the flat buffer of every parameter (``model.flat_params``);
* ``layers``: an int64 table, one row per linear layer, encoder then decoder,
  ``[W offset, b offset, I, O, activation code, output offset in the work
  buffer]``; ``alphas``: each layer's leaky-ReLU slope;
* ``work``: (tasks, S), each thread's scratch: every layer's output, two
  ping-pong buffers for the gradients flowing back, the code ``z``.

The arithmetic is the per-op kernels' own (the same row functions of
:mod:`numpyvae.backend.numba_kernels`, the same scalar math): only the
parallel decomposition differs, so the step agrees with the per-op path to
rounding (the gradient is summed over two halves of the batch instead of
one), which the tests check against the reference backend.
"""

from __future__ import annotations

import math

from numba import prange

from .numba_blas import gemm_blas
from .numba_jit import jit_kernels
from .numba_kernels import (
    adam_element,
    bernoulli_nll_and_grad_row,
    bias_activation_block,
    bias_gradient_block,
    gaussian_dlogvar_rows,
    gaussian_nll_and_grad_row,
    latent_backward,
    latent_forward,
)

#: Likelihood codes of :func:`mlp_step`.
BERNOULLI, GAUSSIAN = 0, 1
#: Columns of the ``layers`` table.
W_OFF, B_OFF, IN, OUT, ACT, Y_OFF = range(6)


def rows_of(B, tasks, t):
    """Rows ``(n0, n1)`` of a batch of ``B`` that thread ``t`` of ``tasks`` takes (even split)."""
    return t * B // tasks, (t + 1) * B // tasks


def view2d(flat, offset, rows, cols):
    """``flat[offset : offset + rows * cols]`` as a C-ordered (rows, cols) matrix."""
    return flat[offset:offset + rows * cols].reshape((rows, cols))


def layer_forward(inp, params, layer, alpha, y, blas):
    """inp: (r, I), y: (r, O); ``y = f(inp W + b)`` for one row of the ``layers`` table."""
    T = y.dtype.type
    W = view2d(params, layer[W_OFF], layer[IN], layer[OUT])
    b = params[layer[B_OFF]:layer[B_OFF] + layer[OUT]]
    gemm_blas(T(1), inp, W, T(0), y, blas)
    bias_activation_block(y, b, layer[ACT], alpha, 0, layer[OUT])


def layer_backward(dy, inp, y, params, grads, layer, alpha, dx, need_dx, blas):
    """Backward of :func:`layer_forward`, into this thread's gradient copy ``grads`` (P,).

    dy: (r, O) becomes ``da = dy f'(y)`` in place; ``db = sum da`` and
    ``dW = inp.T da`` are written (not accumulated: ``grads`` holds one
    step); if ``need_dx``, ``dx = da W.T`` (r, I).
    """
    T = y.dtype.type
    I, O = layer[IN], layer[OUT]
    W = view2d(params, layer[W_OFF], I, O)
    dW = view2d(grads, layer[W_OFF], I, O)
    db = grads[layer[B_OFF]:layer[B_OFF] + O]
    for j in range(O):
        db[j] = T(0)
    bias_gradient_block(dy, y, layer[ACT], alpha, dy, db, 0, O)
    gemm_blas(T(1), inp.T, dy, T(0), dW, blas)
    if need_dx:
        gemm_blas(T(1), dy, W.T, T(0), dx, blas)


def mlp_step(params, parts, layers, alphas, n_enc, vae, x, eps, dkl, likelihood, logvar,
             inv_var, logvar_off, scale, nll, kl, work, pingpong, z_off, blas, tasks):
    """Loss and gradient of a batch, data-parallel: chunk ``t`` is rows ``n0:n1``.

    params: (P,); parts: (tasks, P), chunk ``t``'s gradient in row ``t``;
    layers: (n_layers, 6), encoder layers first (``n_enc`` of them);
    alphas: (n_layers,); x: (B, D); eps: (B, L) and dkl: (B,), the KL's
    weight per example (``beta / B``), both unused unless ``vae``;
    likelihood: :data:`BERNOULLI`, or :data:`GAUSSIAN` with ``logvar`` and
    ``inv_var`` (D,) or (1,) (``inv_var`` receives ``exp(-logvar)``) and,
    when the variance is learned, its gradient at ``logvar_off`` in ``parts``
    (``logvar_off < 0``: fixed); scale: the likelihood gradient's weight
    (``1 / B``); nll, kl: (B,) per-example outputs (kl unused unless
    ``vae``); work: (tasks, S) scratch, see :func:`mlp_step_rows`.
    """
    B = x.shape[0]
    T = x.dtype.type
    if likelihood == GAUSSIAN:
        for d in range(logvar.shape[0]):
            inv_var[d] = math.exp(-logvar[d])
    for t in prange(tasks):
        n0, n1 = rows_of(B, tasks, t)
        if n1 > n0:
            mlp_step_rows(params, parts[t], layers, alphas, n_enc, vae, x[n0:n1], eps[n0:n1],
                          dkl[n0:n1], likelihood, logvar, inv_var, logvar_off, T(scale),
                          nll[n0:n1], kl[n0:n1], work[t], pingpong, z_off, blas)
        else:  # more chunks than examples: this one contributes nothing
            grads = parts[t]
            for i in range(grads.shape[0]):
                grads[i] = T(0)


def mlp_step_rows(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, likelihood, logvar,
                  inv_var, logvar_off, scale, nll, kl, scratch, pingpong, z_off, blas):
    """One chunk of :func:`mlp_step`: rows x: (r, D), eps: (r, L), nll, kl: (r,).

    grads: (P,) this chunk's gradient copy, written (not accumulated);
    scratch: (S,) its work buffer, holding each layer's output (r, O) at the
    layer's ``Y_OFF``, the code z (r, L) at ``z_off`` and two buffers for the
    gradient flowing back, at ``pingpong[0]`` and ``pingpong[1]``, each wide
    enough for any layer's input or output.
    """
    r = x.shape[0]
    T = grads.dtype.type
    n_layers = layers.shape[0]
    L = eps.shape[1]
    # Forward: encoder, latent layer, decoder.
    inp = x
    for k in range(n_layers):
        if k == n_enc and vae:  # the decoder starts from a sample of the code
            z = view2d(scratch, z_off, r, L)
            latent_forward(inp, eps, z, kl)
            inp = z
        layer = layers[k]
        y = view2d(scratch, layer[Y_OFF], r, layer[OUT])
        layer_forward(inp, params, layer, alphas[k], y, blas)
        inp = y
    # The likelihood: per-example NLL and its gradient in the decoder's output.
    D = inp.shape[1]
    dy = view2d(scratch, pingpong[0], r, D)
    if likelihood == BERNOULLI:
        for n in range(r):
            nll[n] = bernoulli_nll_and_grad_row(inp[n], x[n], scale, dy[n])
    else:
        for n in range(r):
            nll[n] = gaussian_nll_and_grad_row(inp[n], logvar, inv_var, x[n], scale, dy[n])
        if logvar_off >= 0:
            dlogvar = grads[logvar_off:logvar_off + D]
            for d in range(D):
                dlogvar[d] = T(0)
            gaussian_dlogvar_rows(inp, x, inv_var, scale, dlogvar)
    # Backward, in reverse; ``side`` says which ping-pong buffer holds dy.
    side = 0
    for k in range(n_layers - 1, -1, -1):
        layer = layers[k]
        if k == n_enc - 1 and vae:  # through the latent layer: dz -> dh = [dmu | dlogvar]
            dh = view2d(scratch, pingpong[1 - side], r, 2 * L)
            h = view2d(scratch, layer[Y_OFF], r, 2 * L)
            latent_backward(dy, h, eps, dkl, 0.0, dh)
            dy, side = dh, 1 - side
        if k == 0:
            inp = x
        elif k == n_enc and vae:
            inp = view2d(scratch, z_off, r, L)
        else:
            inp = view2d(scratch, layers[k - 1, Y_OFF], r, layers[k - 1, OUT])
        y = view2d(scratch, layer[Y_OFF], r, layer[OUT])
        dx = view2d(scratch, pingpong[1 - side], r, layer[IN])
        layer_backward(dy, inp, y, params, grads, layer, alphas[k], dx, k > 0, blas)
        dy, side = dx, 1 - side


def adam_update_parts(param, parts, grad, m, v, beta1, beta2, eps, weight_decay, decoupled,
                      shrink, step, sqrt_bias2):
    """param, grad, m, v: (P,), parts: (tasks, P). ``grad = sum of parts``, then one Adam step.

    The chunks' gradient copies are summed in a fixed order (chunk 0
    first), written to ``grad`` (the model's gradients, as the per-op path
    leaves them) and used at once: one pass over the parameters. The scalars
    are :func:`numpyvae.backend.numba_kernels.adam_update`'s.
    """
    T = param.dtype.type
    b1, c1 = T(beta1), T(1 - beta1)
    b2, c2 = T(beta2), T(1 - beta2)
    eps, wd, shrink, step, sqrt_bias2 = T(eps), T(weight_decay), T(shrink), T(step), T(sqrt_bias2)
    tasks = parts.shape[0]
    for i in prange(param.shape[0]):
        g = parts[0, i]
        for t in range(1, tasks):
            g += parts[t, i]
        grad[i] = g
        param[i], m[i], v[i] = adam_element(param[i], g, m[i], v[i], b1, c1, b2, c2, eps, wd,
                                            decoupled, shrink, step, sqrt_bias2)


def sum_parts(parts, grad):
    """parts: (tasks, P), grad: (P,); ``grad = sum of parts`` (for any other optimizer)."""
    tasks = parts.shape[0]
    for i in prange(grad.shape[0]):
        g = parts[0, i]
        for t in range(1, tasks):
            g += parts[t, i]
        grad[i] = g


jit_kernels(globals(), {
    "rows_of": False, "view2d": False, "layer_forward": False, "layer_backward": False,
    "mlp_step": True, "mlp_step_rows": False, "adam_update_parts": True, "sum_parts": True,
})
