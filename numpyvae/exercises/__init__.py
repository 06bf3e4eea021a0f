"""Exercises for the notebooks: the student writes one piece of a VAE's math, a check grades it.

* :mod:`numpyvae.exercises.checks` — ``check_<exercise>(fn)``: the student's function against
  central differences in float64 and the library's own op, on several
  shapes; a wrong answer raises :class:`ExerciseFailed` saying what is wrong.
* :mod:`numpyvae.exercises.diagnosis` — naming the mistake: the wrong shape, a sign, a factor
  of 2 or ½, a transposed matrix, a sum over the wrong axis, a missing batch
  average.
* :mod:`numpyvae.exercises.swap` — :func:`use`: train the real model on the student's function.
* :mod:`numpyvae.exercises.notebook` — finding the exercises of a notebook and making the
  student's version (nbgrader's markers).
"""

from .checks import (
    CHECKS,
    check_adam_step,
    check_bernoulli_nll_backward,
    check_concat_label_backward,
    check_conv2d_backward_im2col,
    check_conv2d_backward_loops,
    check_conv_transpose2d_forward,
    check_gaussian_kl,
    check_gaussian_kl_backward,
    check_gaussian_nll_backward,
    check_importance_weights,
    check_iwae_backward,
    check_linear_backward,
    check_relu_backward,
    check_reparameterize_backward,
    check_roc_auc,
    check_sigmoid_backward,
    check_tanh_backward,
    solved,
    written,
)
from .diagnosis import ExerciseFailed, NotWritten, diagnose
from .notebook import Exercise, exercises_in, stub_solution, student_notebook
from .swap import use

__all__ = [
    "CHECKS", "Exercise", "ExerciseFailed", "NotWritten", "diagnose", "exercises_in",
    "stub_solution",
    "solved", "student_notebook", "use", "written",
    "check_adam_step", "check_bernoulli_nll_backward", "check_concat_label_backward",
    "check_conv2d_backward_im2col", "check_conv2d_backward_loops",
    "check_conv_transpose2d_forward", "check_gaussian_kl", "check_gaussian_kl_backward",
    "check_gaussian_nll_backward", "check_importance_weights", "check_iwae_backward",
    "check_linear_backward", "check_relu_backward", "check_reparameterize_backward",
    "check_roc_auc", "check_sigmoid_backward", "check_tanh_backward",
]
