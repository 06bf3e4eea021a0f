"""The forward and backward pass of an MLP VAE (or autoencoder), and Adam, in one kernel call.

The per-op path (:mod:`numpyvae.fast.numba_ops`) runs each layer's
forward and backward as its own kernel, called from Python: about twenty
calls per step, each checking its arguments, switching BLAS's threads and
finding its work buffers. At batch 32 that Python costs about as much as
the arithmetic it calls.

:func:`mlp_step` runs the same kernels from jitted code, in one call from
Python: each layer's forward (:func:`~.numba_kernels.linear_forward`, one
block of the output per thread), the latent layer, the likelihood and its
gradient, and back through every layer. The layers' products are cut
between threads as on the per-op path (into one block per thread of
Numba's pool, by rows or by columns as :func:`~.numba_kernels.split_rows`
says), so the big products run at the same speed; what goes is the Python
between them, and most of the parallel regions. Each region ends in a
barrier where every thread waits for the slowest, and a region that
follows serial work pays for waking the pool's sleeping threads (on TBB
many times what a region straight after another pays). So the backward is
arranged in as few regions as the dependencies allow:

* A layer whose products are shared between threads takes two regions
  (:func:`big_layer_backward`): ``da = dy f'(y)`` and ``db``, each thread a
  block of columns (skipped for the identity); then each thread its block
  of ``dW`` and of ``dx``.
* Adam's step of a layer must wait until its ``dx``, which reads the
  weights, is done. It waits in a list (``spans``) and runs in the next
  region, shared out evenly: memory-bound work beside the next layer's
  products. The first layer has no ``dx``: each thread steps its own block
  of ``W`` as soon as it has written that block of ``dW``.
* Layers whose products are small (the latent layer's ``400 x 40`` and
  ``20 x 400`` in the default model, below :data:`SMALL_PRODUCT`
  multiply-adds) run on one thread, where starting a parallel region costs
  more than the arithmetic it shares; a run of them (and the latent layer
  between) takes one region (:func:`small_layers_region`), in which the
  other threads take the waiting Adam steps meanwhile.
* The gradients are written, not accumulated (BLAS with ``beta = 0``), so
  no pass zeroes them first; ``da`` is written over ``dy`` (each element is
  read before it is written, by the thread that writes it), so two buffers
  of gradients ping-pong back through the network.

The forward pass has no such waiting work to share out, and its small
layers would leave every thread but one idle. So once the batch gives each
thread :data:`FORWARD_ROWS` examples or more (and the BLAS is MKL, on whose
products it measured faster: ``numba_ops.FORWARD_BY_ROWS``), it runs in one
region of its own (:func:`forward_region`): each thread takes its block of examples
through every layer, products and all, and then the likelihood's loss and
gradient of those examples while they are still in its cache. A smaller
batch shares each large product between the threads instead, as the
backward pass does.

In the default model at batch 128 the step takes 5 regions where one per
kernel and one per layer's Adam took 16. What the one call gains over the
per-op path is measured by ``benchmarks/bench_peers.py`` (its threading
table: the training step beside the per-op path). With an optimizer other
than Adam (or AdamW) the optimizer steps after the call.

A large batch (:data:`DATA_PARALLEL_ROWS` examples or more per thread) is
cut the other way (:func:`mlp_step_rows`): each thread takes its block of
examples through the whole forward and backward pass on its own, with the
same serial pieces (:func:`forward`, :func:`small_layers_backward`), and
the blocks' gradients are summed once, beside Adam's step. Two regions in
all, and no thread reads another's activations.

The blocks depend on the shapes and the pool size only, never on how many
threads run, so the step gives the same bits on one thread or on all
(``tests/test_threads.py``; called on one thread with ``tasks = 1``, every
product whole, it gives them too where :mod:`numpyvae.fast.whole_products`
checked it); it agrees with the per-op path to rounding
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

from numba import prange

from .numba_blas import gemm_blas
from .numba_jit import jit_kernels
from .numba_kernels import (
    IDENTITY,
    adam_range,
    bernoulli_nll_and_grad,
    bernoulli_nll_and_grad_row,
    bias_activation_block,
    bias_gradient_block,
    block,
    gaussian_dlogvar_rows,
    gaussian_nll_and_grad,
    gaussian_nll_and_grad_row,
    latent_backward,
    latent_forward,
    linear_forward,
    split_rows,
)

#: Likelihood codes of :func:`mlp_step`.
BERNOULLI, GAUSSIAN = 0, 1
#: Columns of the ``layers`` table.
W_OFF, B_OFF, IN, OUT, ACT, Y_OFF = range(6)
#: A product of fewer multiply-adds than this (``B * I * O``) runs on one
#: thread: the latent layer's products at batch 128 (1 to 2 million) ran
#: faster on one thread than split in two, on two cores (each product alone:
#: ``benchmarks/bench_kernels.py``).
SMALL_PRODUCT = 1 << 22
#: How many multiply-adds of a small layer's product take as long as one
#: parameter's Adam step, on one thread: the ratio of the two times in the
#: default VAE at batch 128 (the small layers' backward, 6.1 million
#: multiply-adds, against Adam on the 314,000 parameters of the last layer;
#: ``benchmarks/bench_kernels.py`` times each kernel alone at these shapes).
ADAM_ELEMENT_MACS = 20
#: A batch with at least this many examples for each thread of Numba's pool
#: takes the data-parallel step (:func:`mlp_step_rows`; the choice is made in
#: :func:`numpyvae.fast.numba_ops.mlp_step`). Timed against :func:`mlp_step`
#: on two cores (the default VAE with Adam, in one process, alternating), it
#: was faster from 256 rows per thread on, on two threads and on one; with
#: 128 rows each two threads gained but one thread lost, and one thread is
#: what a busy machine leaves: so below 256 rows each the products are
#: shared. ``benchmarks/bench_peers.py`` measures the step at batch 512.
DATA_PARALLEL_ROWS = 256
#: A batch with at least this many examples for each thread of Numba's pool
#: runs :func:`mlp_step`'s forward pass and likelihood data-parallel
#: (:func:`forward_region`; the choice is made in
#: :func:`numpyvae.fast.numba_ops.mlp_step`, with MKL only). Timed against the
#: forward pass with shared products by ``benchmarks/bench_forward_rows.py``
#: (the default VAE, the two in turn in one process, on an Intel CPU with
#: MKL): faster at 64 examples per thread, about even from 80 to 128 and
#: beside a busy process, slower at 16, where each thread's products are too
#: thin.
FORWARD_ROWS = 64
#: Elements summed (and stepped) at a time in :func:`reduce_and_step`.
REDUCE_CHUNK = 4096


def view2d(flat, offset, rows, cols):
    """``flat[offset : offset + rows * cols]`` as a C-ordered (rows, cols) matrix."""
    return flat[offset:offset + rows * cols].reshape((rows, cols))


def gradient_rows(work, pingpong, side, B, cols, r0, r1):
    """Rows ``r0:r1`` of a (B, cols) gradient in ping-pong buffer ``side``, as a C-ordered matrix.

    The buffer holds ``B`` rows of its widest gradient (``wide`` columns).
    A block of rows starts at ``r0 * wide``, whatever ``cols``: so in
    :func:`mlp_step_rows`, where each thread runs its block of examples at
    its own pace, one thread's (r1 - r0, cols) never overlaps another's,
    whichever layers the two have reached. For all the rows it is the
    (B, cols) matrix at the buffer's start.
    """
    wide = (pingpong[1] - pingpong[0]) // B
    return view2d(work, pingpong[side] + r0 * wide, r1 - r0, cols)


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


def adam_span(params, grads, m, v, adam, start, size):
    """Adam on ``params[start : start + size]`` (and ``m``, ``v``) from ``grads``, on one thread.

    ``adam``: (8,) float64, the scalars of :func:`~.numba_kernels.adam_update`:
    ``[beta1, beta2, eps, weight_decay, decoupled, shrink, step_size, sqrt_bias2]``.
    """
    end = start + size
    adam_range(params[start:end], grads[start:end], m[start:end], v[start:end], adam[0],
               adam[1], adam[2], adam[3], adam[4] != 0.0, adam[5], adam[6], adam[7])


def adam_share(params, grads, m, v, adam, spans, n_spans, t, tasks):
    """Block ``t`` of ``tasks`` of Adam over the first ``n_spans`` rows of ``spans`` (start, size).

    The spans are taken as one range, cut into ``tasks`` equal blocks
    (:func:`~.numba_kernels.block`), so every thread gets the same share
    however the spans' sizes differ.
    """
    lo, hi = block(spans_size(spans, n_spans), tasks, t)
    adam_chunk(params, grads, m, v, adam, spans, n_spans, lo, hi)


def spans_size(spans, n_spans):
    """How many elements the first ``n_spans`` spans (start, size) hold together."""
    size = 0
    for s in range(n_spans):
        size += spans[s, 1]
    return size


def adam_chunk(params, grads, m, v, adam, spans, n_spans, lo, hi):
    """Adam on elements ``lo:hi`` of the first ``n_spans`` spans (start, size), end to end."""
    reduce_and_step(params, grads, grads[:0], 0, m, v, adam, True, spans, n_spans, lo, hi)


def reduce_and_step(params, grads, partials, n_parts, m, v, adam, step, spans, n_spans, lo, hi):
    """Elements ``lo:hi`` of the first ``n_spans`` spans, end to end: sum, then Adam's step.

    ``partials``: (n_parts * P,), the gradients of the other blocks of the
    batch (:func:`mlp_step_rows`), added into ``grads`` in order; then, if
    ``step``, Adam. Piece by piece of :data:`REDUCE_CHUNK` elements, so that
    Adam finds the summed gradient still in the cache.
    """
    chunk = REDUCE_CHUNK if n_parts > 0 else hi - lo
    seen = 0
    for s in range(n_spans):
        a = max(lo - seen, 0)
        b = min(hi - seen, spans[s, 1])
        for c0 in range(spans[s, 0] + a, spans[s, 0] + b, max(chunk, 1)):
            c1 = min(c0 + chunk, spans[s, 0] + b)
            add_partials(grads, partials, n_parts, c0, c1)
            if step:
                adam_span(params, grads, m, v, adam, c0, c1 - c0)
        seen += spans[s, 1]


def add_partials(grads, partials, n_parts, c0, c1):
    """``grads[c0:c1] += partials[u P + c0 : u P + c1]`` for each part ``u``, in order.

    ``P`` is the size of ``grads``: part ``u`` is the ``u``-th P-long piece of ``partials``.
    """
    P = grads.shape[0]
    g = grads[c0:c1]
    for u in range(n_parts):
        part = partials[u * P + c0:u * P + c1]
        for i in range(g.shape[0]):
            g[i] += part[i]


def adam_rows_cols(params, grads, m, v, adam, W_off, O, i0, i1, j0, j1):
    """Adam on the block ``[i0:i1, j0:j1]`` of the (I, O) weight matrix at ``W_off``, row by row."""
    if j0 == 0 and j1 == O:  # whole rows: one contiguous span
        adam_span(params, grads, m, v, adam, W_off + i0 * O, (i1 - i0) * O)
    else:
        for i in range(i0, i1):
            adam_span(params, grads, m, v, adam, W_off + i * O + j0, j1 - j0)


def dy_side(k, n_layers, n_enc, vae):
    """Which ping-pong buffer holds layer ``k``'s output gradient (after the latent layer's).

    The likelihood's gradient starts in buffer 0; every layer's backward
    (and the latent layer's) writes the other one.
    """
    flips = n_layers - 1 - k + (1 if vae and k < n_enc else 0)
    return flips % 2


def through_latent(work, pingpong, side, h_off, eps, dkl, r0, r1):
    """Back through the latent layer: ``dz`` (B, L) -> ``dh = [dmu | dlogvar]`` (B, 2L), rows r0:r1.

    ``dz`` is in ping-pong buffer ``1 - side``, ``dh`` goes to ``side``, and
    ``h`` (the encoder's output) starts at ``h_off`` in ``work``.
    """
    B, L = eps.shape
    latent_backward(gradient_rows(work, pingpong, 1 - side, B, L, r0, r1),
                    view2d(work, h_off, B, 2 * L)[r0:r1], eps[r0:r1], dkl[r0:r1], 0.0,
                    gradient_rows(work, pingpong, side, B, 2 * L, r0, r1))


def layer_input(work, x, layers, k, n_enc, vae, z_off, B, L):
    """Layer ``k``'s input as the forward pass left it: x, the code z, or the output below."""
    if k == 0:
        return x
    if k == n_enc and vae:
        return view2d(work, z_off, B, L)
    return view2d(work, layers[k - 1, Y_OFF], B, layers[k - 1, OUT])


def small_layers_backward(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, work,
                          pingpong, z_off, k_hi, k_lo, r0, r1, blas):
    """Layers ``k_hi`` down to ``k_lo`` (and the latent layer between), rows ``r0:r1``, one thread.

    Each: ``da = dy f'(y)`` in place and ``db = sum_n da[n]``; ``dW = inp.T da``
    and, but for layer 0, ``dx = da W.T`` into the other ping-pong buffer.
    The gradients are those of the rows ``r0:r1`` of the batch alone (all of
    it in :func:`mlp_step`, one thread's block in :func:`mlp_step_rows`).
    """
    B = x.shape[0]
    L = eps.shape[1]
    n_layers = layers.shape[0]
    T = x.dtype.type
    for k in range(k_hi, k_lo - 1, -1):
        layer = layers[k]
        side = dy_side(k, n_layers, n_enc, vae)
        if k == n_enc - 1 and vae:
            through_latent(work, pingpong, side, layer[Y_OFF], eps, dkl, r0, r1)
        dy = gradient_rows(work, pingpong, side, B, layer[OUT], r0, r1)
        y = view2d(work, layer[Y_OFF], B, layer[OUT])[r0:r1]
        inp = layer_input(work, x, layers, k, n_enc, vae, z_off, B, L)[r0:r1]
        db = grads[layer[B_OFF]:layer[B_OFF] + layer[OUT]]
        for j in range(db.shape[0]):
            db[j] = T(0)
        bias_gradient_block(dy, y, layer[ACT], alphas[k], db, 0, layer[OUT])
        gemm_blas(T(1), inp.T, dy, T(0), view2d(grads, layer[W_OFF], layer[IN], layer[OUT]),
                  blas)
        if k > 0:
            gemm_blas(T(1), dy, view2d(params, layer[W_OFF], layer[IN], layer[OUT]).T, T(0),
                      gradient_rows(work, pingpong, 1 - side, B, layer[IN], r0, r1), blas)


def small_layers_region(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, work,
                        pingpong, z_off, k_hi, k_lo, m, v, adam, spans, n_spans, blas, tasks):
    """:func:`small_layers_backward` on one thread while the others take the waiting Adam steps.

    The small layers' products are too small to share; the Adam steps of
    the layers above (memory-bound) run beside them. When the small layers
    are the lighter work (at small batches), the thread that runs them also
    takes part of the Adam steps after them: as much as evens the threads'
    work, counting :data:`ADAM_ELEMENT_MACS` multiply-adds of the layers'
    products for each parameter's step.
    """
    B = x.shape[0]
    macs = 0
    for k in range(k_lo, k_hi + 1):
        macs += B * layers[k, IN] * layers[k, OUT] * (2 if k > 0 else 1)
    total = spans_size(spans, n_spans)
    first = max(0, (total - (tasks - 1) * (macs // ADAM_ELEMENT_MACS)) // tasks)
    first = total if tasks == 1 else min(first // 16 * 16, total)
    for t in prange(tasks):
        if t == 0:
            small_layers_backward(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, work,
                                  pingpong, z_off, k_hi, k_lo, 0, B, blas)
            adam_chunk(params, grads, m, v, adam, spans, n_spans, 0, first)
        else:
            lo, hi = block(total - first, tasks - 1, t - 1)
            adam_chunk(params, grads, m, v, adam, spans, n_spans, first + lo, first + hi)


def big_layer_backward(dy, inp, W, y, dW, db, act, alpha, dx, need_dx, params, grads, m, v,
                       adam, step, W_off, b_off, spans, n_spans, blas, tasks):
    """Backward of a layer whose products are shared between threads: at most two regions.

    dy, y: (B, O); inp: (B, I); W, dW: (I, O); db: (O,); dx: (B, I).

    1. Unless the activation is the identity, ``da = dy f'(y)`` in place and
       ``db = sum_n da[n]``, each thread a block of columns.
    2. Each thread its block of ``dW = inp.T da`` and, if ``need_dx``, of
       ``dx = da W.T``; for the identity, its columns of ``db`` too; and its
       share of the waiting Adam steps (``spans``: the layers above, whose
       backward is done). Without ``dx`` (the first layer), nothing reads
       ``W`` any more, so each thread steps its own block of ``W`` and of
       ``b`` here as well.
    """
    B, O = y.shape
    I = inp.shape[1]
    T = y.dtype.type
    for j in range(O):
        db[j] = T(0)
    if act != IDENTITY:
        for t in prange(tasks):
            j0, j1 = block(O, tasks, t)
            bias_gradient_block(dy, y, act, alpha, db, j0, j1)
    w_rows = split_rows(I, O, tasks)
    x_rows = split_rows(B, I, tasks)
    for t in prange(tasks):
        j0, j1 = block(O, tasks, t)
        if act == IDENTITY:
            bias_gradient_block(dy, y, act, alpha, db, j0, j1)
        if w_rows:
            i0, i1 = block(I, tasks, t)
            c0, c1 = 0, O
        else:
            i0, i1 = 0, I
            c0, c1 = j0, j1
        if i1 > i0 and c1 > c0:
            gemm_blas(T(1), inp[:, i0:i1].T, dy[:, c0:c1], T(0), dW[i0:i1, c0:c1], blas)
        if need_dx:
            if x_rows:
                r0, r1 = block(B, tasks, t)
                if r1 > r0:
                    gemm_blas(T(1), dy[r0:r1], W.T, T(0), dx[r0:r1], blas)
            else:
                r0, r1 = block(I, tasks, t)
                if r1 > r0:
                    gemm_blas(T(1), dy, W[r0:r1].T, T(0), dx[:, r0:r1], blas)
        elif step:
            if i1 > i0 and c1 > c0:
                adam_rows_cols(params, grads, m, v, adam, W_off, O, i0, i1, c0, c1)
            if j1 > j0:
                adam_span(params, grads, m, v, adam, b_off + j0, j1 - j0)
        if step:
            adam_share(params, grads, m, v, adam, spans, n_spans, t, tasks)


def adam_region(params, grads, m, v, adam, spans, n_spans, tasks):
    """The waiting Adam steps, shared between the threads."""
    for t in prange(tasks):
        adam_share(params, grads, m, v, adam, spans, n_spans, t, tasks)


def add_layer_span(spans, n_spans, layer):
    """Append the layer's weights and bias to the waiting Adam steps; the new count."""
    spans[n_spans, 0] = layer[W_OFF]
    spans[n_spans, 1] = layer[IN] * layer[OUT]
    spans[n_spans + 1, 0] = layer[B_OFF]
    spans[n_spans + 1, 1] = layer[OUT]
    return n_spans + 2


def total(a):
    """The sum of the 1-D ``a``, in float64 (finite if and only if every element is)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += float(a[i])
    return s


def forward(params, layers, alphas, n_enc, vae, x, eps, kl, work, z_off, r0, r1, blas, tasks):
    """Rows ``r0:r1`` of the batch through the encoder, the latent layer and the decoder.

    Each layer's output goes to its place in ``work``, the code ``z`` to
    ``z_off`` and the KL to ``kl``; returns the decoder's output rows. A
    layer's product is cut into ``tasks`` blocks unless it is small
    (:func:`layer_tasks`); ``tasks = 1`` runs the whole pass on this thread.
    """
    B = x.shape[0]
    L = eps.shape[1]
    inp = x[r0:r1]
    for k in range(layers.shape[0]):
        layer = layers[k]
        if k == n_enc and vae:  # the decoder starts from a sample of the code
            z = view2d(work, z_off, B, L)[r0:r1]
            latent_forward(inp, eps[r0:r1], z, kl[r0:r1])
            inp = z
        y = view2d(work, layer[Y_OFF], B, layer[OUT])[r0:r1]
        W = view2d(params, layer[W_OFF], layer[IN], layer[OUT])
        b = params[layer[B_OFF]:layer[B_OFF] + layer[OUT]]
        layer_forward(inp, W, b, layer[ACT], alphas[k], y, blas, layer_tasks(r1 - r0, layer, tasks))
        inp = y
    return inp


def forward_region(params, layers, alphas, n_enc, vae, x, eps, kl, work, z_off, likelihood,
                   logvar, inv_var, scale, nll, pingpong, blas, tasks):
    """The forward pass and the likelihood, each thread its block of examples, in one region.

    Each thread takes the rows ``r0:r1`` of the batch (:func:`~.numba_kernels.block`
    of ``B`` in ``tasks``) through every layer on its own (:func:`forward`,
    no product shared), then the likelihood's NLL and its gradient in the
    decoder's output for those rows (:func:`likelihood_rows`, into their rows
    of the (B, D) gradient in ping-pong buffer 0). For a Gaussian, ``inv_var``
    must already hold ``exp(-logvar)``; a learned variance's gradient, a sum
    over every example, is left to the caller.
    """
    B, D = x.shape
    for t in prange(tasks):
        r0, r1 = block(B, tasks, t)
        if r1 > r0:
            out = forward(params, layers, alphas, n_enc, vae, x, eps, kl, work, z_off, r0, r1,
                          blas, 1)
            # rows r0:r1 of the (B, D) gradient the backward pass reads (not
            # gradient_rows' own block layout, which mlp_step_rows' backward uses)
            dy = gradient_rows(work, pingpong, 0, B, D, 0, B)[r0:r1]
            likelihood_rows(out, x[r0:r1], likelihood, logvar, inv_var, inv_var, False, scale,
                            nll[r0:r1], dy)


def mlp_step(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, likelihood, logvar,
             inv_var, logvar_off, scale, nll, kl, sums, work, pingpong, z_off, m, v, adam,
             spans, forward_by_rows, blas, tasks):
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
    docstring says; forward_by_rows: the forward pass and the likelihood as
    :func:`forward_region` (each thread its block of examples), else with
    each large product shared; tasks: blocks per product (Numba's pool size).

    Adam: with ``m``, ``v`` like ``params`` and ``adam`` (8,) its scalars
    (:func:`adam_span`; an empty ``adam`` for none), each layer's weights
    take their Adam step once nothing reads them any more, in the next
    parallel region (see the module docstring), the learned variance's
    last; ``spans``: (2 n_layers + 1, 2) int64, scratch for the list of
    waiting steps. The parameters must be exactly the layers' and that
    variance. No step is taken unless every ``nll``
    and ``kl`` is finite (the per-op path does not step on such a batch
    either). Returns whether the step was taken.
    """
    B, D = x.shape  # the decoder's output is (B, D) too
    T = x.dtype.type
    n_layers = layers.shape[0]
    L = eps.shape[1]
    if forward_by_rows:  # the forward pass and the likelihood, each thread its examples
        if likelihood == GAUSSIAN:
            for d in range(logvar.shape[0]):
                inv_var[d] = math.exp(-logvar[d])
        forward_region(params, layers, alphas, n_enc, vae, x, eps, kl, work, z_off, likelihood,
                       logvar, inv_var, scale, nll, pingpong, blas, tasks)
        last = layers[n_layers - 1]
        out = view2d(work, last[Y_OFF], B, last[OUT])
        if likelihood == GAUSSIAN and logvar_off >= 0:  # a learned variance: over every example
            dlogvar = grads[logvar_off:logvar_off + D]
            for d in range(D):
                dlogvar[d] = T(0)
            gaussian_dlogvar_rows(out, x, inv_var, scale, dlogvar)
    else:  # each large product shared between the threads, then the likelihood
        out = forward(params, layers, alphas, n_enc, vae, x, eps, kl, work, z_off, 0, B, blas,
                      tasks)
        # The likelihood: per-example NLL and its gradient in the decoder's output.
        dy = gradient_rows(work, pingpong, 0, B, D, 0, B)
        if likelihood == BERNOULLI:
            bernoulli_nll_and_grad(out, x, scale, nll, dy)
        else:
            learned = logvar_off >= 0
            dlogvar = grads[logvar_off:logvar_off + D] if learned else inv_var
            if learned:
                for d in range(D):
                    dlogvar[d] = T(0)
            gaussian_nll_and_grad(out, logvar, x, scale, inv_var, dlogvar, learned, nll, dy)
    sums[0] = total(nll)
    sums[1] = total(kl) if vae else 0.0
    step = adam.shape[0] > 0 and math.isfinite(sums[0]) and math.isfinite(sums[1])
    # Backward, in reverse. ``spans`` lists the Adam steps waiting for a
    # region to run in: a layer's weights may step only once its ``dx``
    # (which reads them) is done.
    n_spans = 0
    k = n_layers - 1
    while k >= 0:
        layer = layers[k]
        if layer_tasks(B, layer, tasks) == 1:  # a run of small layers, on one thread
            k_lo = k
            while k_lo > 0 and layer_tasks(B, layers[k_lo - 1], tasks) == 1:
                k_lo -= 1
            small_layers_region(params, grads, layers, alphas, n_enc, vae, x, eps, dkl, work,
                                pingpong, z_off, k, k_lo, m, v, adam, spans,
                                n_spans if step else 0, blas, tasks)
            n_spans = 0
            for j in range(k, k_lo - 1, -1):
                n_spans = add_layer_span(spans, n_spans, layers[j])
            k = k_lo - 1
            continue
        side = dy_side(k, n_layers, n_enc, vae)
        if k == n_enc - 1 and vae:
            through_latent(work, pingpong, side, layer[Y_OFF], eps, dkl, 0, B)
        big_layer_backward(
            gradient_rows(work, pingpong, side, B, layer[OUT], 0, B),
            layer_input(work, x, layers, k, n_enc, vae, z_off, B, L),
            view2d(params, layer[W_OFF], layer[IN], layer[OUT]),
            view2d(work, layer[Y_OFF], B, layer[OUT]),
            view2d(grads, layer[W_OFF], layer[IN], layer[OUT]),
            grads[layer[B_OFF]:layer[B_OFF] + layer[OUT]], layer[ACT], alphas[k],
            gradient_rows(work, pingpong, 1 - side, B, layer[IN], 0, B), k > 0, params, grads, m,
            v, adam, step, layer[W_OFF], layer[B_OFF], spans, n_spans, blas, tasks)
        n_spans = add_layer_span(spans, 0, layer) if k > 0 else 0
        k -= 1
    if step and likelihood == GAUSSIAN and logvar_off >= 0:
        spans[n_spans, 0] = logvar_off
        spans[n_spans, 1] = D
        n_spans += 1
    if step and n_spans > 0:
        adam_region(params, grads, m, v, adam, spans, n_spans, tasks)
    return step


def likelihood_rows(out, x, likelihood, logvar, inv_var, dlogvar, learned, scale, nll, dy):
    """out, x, dy: (n, D) rows of the batch, nll: (n,); their NLL and ``scale`` times its gradient.

    On one thread, row by row with the kernels' own row functions. For a
    Gaussian, ``inv_var`` must already hold ``exp(-logvar)``; with
    ``learned``, ``dlogvar`` (D,) receives these rows' part of its gradient.
    """
    T = dy.dtype.type
    scale = T(scale)
    for n in range(out.shape[0]):
        if likelihood == BERNOULLI:
            nll[n] = bernoulli_nll_and_grad_row(out[n], x[n], scale, dy[n])
        else:
            nll[n] = gaussian_nll_and_grad_row(out[n], logvar, inv_var, x[n], scale, dy[n])
    if learned:
        for d in range(dlogvar.shape[0]):
            dlogvar[d] = T(0)
        gaussian_dlogvar_rows(out, x, inv_var, scale, dlogvar)


def mlp_step_rows(params, grads, partials, layers, alphas, n_enc, vae, x, eps, dkl, likelihood,
                  logvar, inv_var, logvar_off, scale, nll, kl, sums, work, pingpong, z_off, m, v,
                  adam, spans, blas, tasks):
    """:func:`mlp_step` for a large batch: each thread its block of examples, start to end.

    partials: ((tasks - 1) * P,), scratch; the other arguments as for
    :func:`mlp_step`. Two parallel regions:

    1. Each thread takes its block of the batch (:func:`~.numba_kernels.block`
       of ``B`` in ``tasks``) through the forward pass, the likelihood and the
       backward pass, every product on its own (:func:`forward`,
       :func:`likelihood_rows`, :func:`small_layers_backward`): the gradients
       of its examples alone, into ``grads`` for the first block and into its
       part of ``partials`` for the others. The loss's gradient is a sum over
       examples, so the blocks' gradients add up to the batch's.
    2. Each thread its share of the parameters: the blocks' gradients summed
       into ``grads``, in block order, and Adam's step on them
       (:func:`reduce_and_step`).

    No thread waits for another between the first layer's forward and the
    last layer's backward, and each reads only its own examples' activations,
    where :func:`mlp_step` cuts every product between the threads and meets
    at a barrier after each. The blocks depend on ``B`` and ``tasks`` only,
    so the bits do not depend on how many threads run them.
    """
    B, D = x.shape
    P = params.shape[0]
    n_layers = layers.shape[0]
    learned = likelihood == GAUSSIAN and logvar_off >= 0
    if likelihood == GAUSSIAN:
        for d in range(logvar.shape[0]):
            inv_var[d] = math.exp(-logvar[d])
    for t in prange(tasks):
        r0, r1 = block(B, tasks, t)
        if r1 > r0:
            g = grads if t == 0 else partials[(t - 1) * P:t * P]
            out = forward(params, layers, alphas, n_enc, vae, x, eps, kl, work, z_off, r0, r1,
                          blas, 1)
            dlogvar = g[logvar_off:logvar_off + D] if learned else inv_var
            likelihood_rows(out, x[r0:r1], likelihood, logvar, inv_var, dlogvar, learned, scale,
                            nll[r0:r1], gradient_rows(work, pingpong, 0, B, D, r0, r1))
            small_layers_backward(params, g, layers, alphas, n_enc, vae, x, eps, dkl, work,
                                  pingpong, z_off, n_layers - 1, 0, r0, r1, blas)
    sums[0] = total(nll)
    sums[1] = total(kl) if vae else 0.0
    step = adam.shape[0] > 0 and math.isfinite(sums[0]) and math.isfinite(sums[1])
    n_spans = 0
    for k in range(n_layers):
        n_spans = add_layer_span(spans, n_spans, layers[k])
    if learned:
        spans[n_spans, 0] = logvar_off
        spans[n_spans, 1] = D
        n_spans += 1
    n_parts = 0  # the blocks after the first that hold examples
    for t in range(1, tasks):
        r0, r1 = block(B, tasks, t)
        n_parts += 1 if r1 > r0 else 0
    size = spans_size(spans, n_spans)
    for t in prange(tasks):
        lo, hi = block(size, tasks, t)
        reduce_and_step(params, grads, partials, n_parts, m, v, adam, step, spans, n_spans, lo,
                        hi)
    return step


jit_kernels(globals(), {
    "view2d": False, "gradient_rows": False, "layer_tasks": False, "layer_forward": False,
    "adam_span": False,
    "adam_share": False, "adam_chunk": False, "adam_rows_cols": False, "dy_side": False,
    "through_latent": False, "layer_input": False, "small_layers_backward": False,
    "small_layers_region": True,
    "big_layer_backward": True, "adam_region": True, "add_layer_span": False, "total": False,
    "mlp_step": False, "spans_size": False, "reduce_and_step": False, "add_partials": False,
    "forward": False, "likelihood_rows": False, "mlp_step_rows": True, "forward_region": True,
})
