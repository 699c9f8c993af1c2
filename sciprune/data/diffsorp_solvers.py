"""Solvers for PDEBench's 1D diffusion-sorption equation (Takamoto et al. 2022, PDEBench).

PDE (non-conservative form): ``du/dt = D / R(u) * d2u/dx2`` on x in (0, 1), with the Freundlich
retardation ``R(u) = 1 + ((1 - phi) / phi) * rho_s * k_f * n_f * (u + 1e-6)**(n_f - 1)``.

Semi-discrete system (PDEBench's finite-volume generator, restated from the equations):
``Nx`` uniform cells, ``x_i = (i + 1/2) dx``, ``dx = 1 / Nx`` and, for ``i = 0 .. Nx-1``::

    du_i/dt = D / R(u_i) * (u_{i-1} - 2 u_i + u_{i+1}) / dx**2
    u_{-1} = u_left = 1                                  (left ghost cell, Dirichlet)
    u_{Nx} = D * (u_{Nx-2} - u_{Nx-1}) / dx              (right ghost cell, recomputed at every call)

Three integrators of that same system live here:

* :func:`rk45_pdebench` -- PDEBench's own choice: ``scipy.integrate.solve_ivp`` with all defaults
  (RK45, rtol 1e-3, atol 1e-6) and ``(u + 1e-6)`` left unclipped. Its time-integration error is
  O(1e-2) at Nx = 1024; it is kept to reproduce the published file.
* :func:`rodas4_batch` -- the fast ``accurate`` path: the L-stable, stiffly accurate 4th-order
  Rosenbrock method RODAS4 (Hairer & Wanner, *Solving ODEs II*, 2nd ed. 1996, Sec. IV.7) with its
  embedded 3rd-order error estimate and the exact tridiagonal Jacobian, run on a batch of
  samples at once (one LAPACK ``gttrf``/``gttrs`` call for the stacked, block-diagonal system) and
  with a step size per sample, so each sample's result does not depend on the batch it is in.
* :func:`scipy_implicit` -- the reference ``accurate`` path: ``solve_ivp`` Radau or BDF with the
  same analytic sparse Jacobian and tight tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.integrate import solve_ivp
from scipy.linalg.lapack import dgttrf, dgttrs

__all__ = [
    "DiffSorpParams",
    "retardation",
    "cell_centres",
    "rk45_pdebench",
    "rodas4_batch",
    "scipy_implicit",
    "ACCURATE_TOL",
]

#: Mixed absolute/relative tolerance of the batched RODAS4 path (max norm). It gives a max abs
#: error of about 1e-8 against a converged reference at Nx = 32 .. 1024 (see docs/generator.md).
ACCURATE_TOL = 1e-7


@dataclass(frozen=True)
class DiffSorpParams:
    """Physical constants of PDEBench's diffusion-sorption problem (``configs/diff-sorp.yaml``).

    ``D`` diffusion coefficient, ``phi`` porosity, ``rho_s`` bulk density, ``k_f`` and ``n_f`` the
    Freundlich parameters, ``u_left`` the left ghost value, ``eps`` the regulariser in
    ``(u + eps)**(n_f - 1)``.
    """

    D: float = 5e-4
    phi: float = 0.29
    rho_s: float = 2880.0
    k_f: float = 3.5e-4
    n_f: float = 0.874
    u_left: float = 1.0
    eps: float = 1e-6

    @property
    def c_R(self) -> float:
        """``((1 - phi) / phi) * rho_s * k_f * n_f`` (2.1569114 for the defaults)."""
        return (1.0 - self.phi) / self.phi * self.rho_s * self.k_f * self.n_f


def retardation(u: np.ndarray | float, params: DiffSorpParams = DiffSorpParams(), *,
                clip_negative: bool = False) -> np.ndarray:
    """Freundlich retardation ``R(u) = 1 + c_R (u + eps)**(n_f - 1)`` (PDEBench).

    With ``clip_negative`` the base is ``max(u, 0) + eps`` so that R stays finite for the small
    negative trial values an implicit or Rosenbrock stage may produce; the exact semi-discrete
    solution stays >= 0 (discrete minimum principle), so the clip does not change it. Without it
    (PDEBench's form) ``u < -eps`` gives NaN.
    """
    u = np.asarray(u, dtype=np.float64)
    base = (np.maximum(u, 0.0) if clip_negative else u) + params.eps
    with np.errstate(invalid="ignore"):
        return 1.0 + params.c_R * np.power(base, params.n_f - 1.0)


def cell_centres(nx: int) -> np.ndarray:
    """Cell centres ``x_i = (i + 1/2) / nx`` of the uniform grid on (0, 1), shape (nx,), float64."""
    return (np.arange(nx, dtype=np.float64) + 0.5) / nx


# ----------------------------------------------------------------------------------------------
# PDEBench's path: solve_ivp RK45 at default tolerances, unclipped R.


def _rhs_pdebench(t: float, u: np.ndarray, params: DiffSorpParams, dx: float) -> np.ndarray:
    """``D/R(u) * (A u) + b``: A the (1, -2, 1)/dx**2 matrix without ghosts, b the ghost terms.

    The sums follow the row order of a CSR mat-vec so rounding is close to PDEBench's sparse form.
    """
    with np.errstate(invalid="ignore"):
        r = 1.0 + params.c_R * (u + params.eps) ** (params.n_f - 1.0)
    c1 = 1.0 / dx**2
    c2 = -2.0 / dx**2
    au = np.empty_like(u)
    au[1:-1] = c1 * u[:-2] + c2 * u[1:-1] + c1 * u[2:]
    au[0] = c2 * u[0] + c1 * u[1]
    au[-1] = c1 * u[-2] + c2 * u[-1]
    out = params.D / r * au
    ghost_right = params.D * (u[-2] - u[-1]) / dx
    out[0] += params.D / r[0] / dx**2 * params.u_left
    out[-1] += params.D / r[-1] / dx**2 * ghost_right
    return out


def rk45_pdebench(c0: float, nx: int, t_eval: np.ndarray,
                  params: DiffSorpParams = DiffSorpParams()) -> np.ndarray:
    """PDEBench's integration: ``solve_ivp(rhs, (0, T), c0 * ones, t_eval)`` at all defaults.

    Returns (len(t_eval), nx) float64.
    """
    dx = 1.0 / nx
    sol = solve_ivp(_rhs_pdebench, (float(t_eval[0]), float(t_eval[-1])),
                    np.full(nx, float(c0)), t_eval=t_eval, args=(params, dx))
    if sol.status != 0:
        raise RuntimeError(f"RK45 failed for c0={c0}: {sol.message}")
    return sol.y.T.copy()


# ----------------------------------------------------------------------------------------------
# Accurate path: shared right-hand side and exact tridiagonal Jacobian (clipped R).


def _rhs_batch(u: np.ndarray, params: DiffSorpParams, dx: float):
    """f(u) for a batch u (B, N); also returns R(u) and the ghosted 3-point sum L(u)."""
    r = 1.0 + params.c_R * np.power(np.maximum(u, 0.0) + params.eps, params.n_f - 1.0)
    lap = np.empty_like(u)
    lap[:, 1:-1] = u[:, :-2] - 2.0 * u[:, 1:-1] + u[:, 2:]
    lap[:, 0] = params.u_left - 2.0 * u[:, 0] + u[:, 1]
    ghost = params.D / dx * (u[:, -2] - u[:, -1])
    lap[:, -1] = u[:, -2] - 2.0 * u[:, -1] + ghost
    f = (params.D / dx**2) / r * lap
    return f, r, lap


def _jacobian_bands(u: np.ndarray, r: np.ndarray, lap: np.ndarray, params: DiffSorpParams,
                    dx: float):
    """Bands of ``J = df/du`` for f_i = g(u_i) L_i / dx**2, g = D / R.

    ``J_ii = g_i dL_i/du_i / dx**2 + g'(u_i) L_i / dx**2`` with ``g' = -D R'/R**2`` and
    ``R'(u) = (R - 1)(n_f - 1)/(u + eps)`` (0 where the clip is active); off-diagonals
    ``g_i / dx**2``. The right ghost adds ``a = D/dx``: ``dL/du_{N-2} = 1 + a``,
    ``dL/du_{N-1} = -2 - a``. Returns (sub, diag, sup), each (B, N); sub[:, 0], sup[:, -1] unused.
    """
    a = params.D / dx
    g = (params.D / dx**2) / r
    rprime = np.where(u > 0.0, (r - 1.0) * (params.n_f - 1.0) / (np.maximum(u, 0.0) + params.eps),
                      0.0)
    diag = -2.0 * g - (params.D / dx**2) * rprime / (r * r) * lap
    diag[:, -1] += -a * g[:, -1]
    sub = g.copy()
    sub[:, -1] *= 1.0 + a
    return sub, diag, g


# RODAS4 coefficients (Hairer & Wanner 1996, rodas.f METH=1), in the "transformed" form:
# (1/(h gamma) I - J) k_s = f(u + sum_j a_sj k_j) + (1/h) sum_j c_sj k_j;
# stage 6 is evaluated at (stage-5 argument + k_5); u_new = that argument + k_6; error = k_6.
_GAMMA = 0.25
_A = (
    (),
    (1.544,),
    (0.9466785280815826, 0.2557011698983284),
    (3.314825187068521, 2.896124015972201, 0.9986419139977817),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950),
)
_C = (
    (),
    (-5.6688,),
    (-2.430093356833875, -0.2063599157091915),
    (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
    (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
    (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136,
     -6.058818238834054),
)


def _rodas4_step(u: np.ndarray, h: np.ndarray, params: DiffSorpParams, dx: float):
    """One RODAS4 step of size h[b] for every row of u (B, N). Returns (u_new, k6 error)."""
    B, N = u.shape
    f0, r, lap = _rhs_batch(u, params, dx)
    sub, diag, sup = _jacobian_bands(u, r, lap, params, dx)
    # Stacked block-diagonal tridiagonal matrix M = I/(h gamma) - J, couplings between samples 0.
    md = (1.0 / (_GAMMA * h))[:, None] - diag
    ml = -sub
    ml[:, 0] = 0.0
    mu = -sup
    mu[:, -1] = 0.0
    dl, d, du, du2, ipiv, info = dgttrf(ml.ravel()[1:], md.ravel(), mu.ravel()[:-1],
                                        overwrite_dl=1, overwrite_d=1, overwrite_du=1)
    if info != 0:
        raise RuntimeError(f"singular RODAS4 matrix (LAPACK gttrf info={info})")

    def solve(b: np.ndarray) -> np.ndarray:
        x, _ = dgttrs(dl, d, du, du2, ipiv, b.reshape(-1, 1), overwrite_b=1)
        return x.reshape(B, N)

    inv_h = (1.0 / h)[:, None]
    ks = [solve(f0)]
    arg = u
    for s in range(1, 6):
        if s < 5:
            arg = u + _A[s][0] * ks[0]
            for j in range(1, s):
                arg += _A[s][j] * ks[j]
        else:
            arg = arg + ks[4]
        fs, _, _ = _rhs_batch(arg, params, dx)
        corr = _C[s][0] * ks[0]
        for j in range(1, s):
            corr += _C[s][j] * ks[j]
        corr *= inv_h
        corr += fs
        ks.append(solve(corr))
    return arg + ks[5], ks[5]


def rodas4_batch(c0: np.ndarray, nx: int, t_eval: np.ndarray,
                 params: DiffSorpParams = DiffSorpParams(), *, tol: float = ACCURATE_TOL,
                 max_steps: int = 200_000) -> tuple[np.ndarray, dict]:
    """Integrate ``u(x, 0) = c0[b]`` for every b with adaptive RODAS4, one step size per sample.

    Step control per sample: ``err = max_i |k6_i| / (tol (1 + max(|u_i|, |u_new_i|)))``; accept when
    ``err <= 1``; ``h <- h * clip(0.9 err**(-1/4), 0.2, 6)``; steps are shortened to land exactly
    on each ``t_eval`` time.

    Args:
        c0: (B,) constant initial values.
        nx: number of cells.
        t_eval: (Nt,) increasing output times; ``t_eval[0]`` is the initial time.
    Returns:
        (u, stats): u (B, Nt, nx) float64; stats has per-sample ``steps`` and ``rejected`` (B,).
    """
    c0 = np.asarray(c0, dtype=np.float64).ravel()
    t_eval = np.asarray(t_eval, dtype=np.float64)
    B, nt, dx = c0.size, t_eval.size, 1.0 / nx
    out = np.empty((B, nt, nx))
    u = np.repeat(c0[:, None], nx, axis=1)
    out[:, 0] = u
    t = np.full(B, t_eval[0])
    # First step: a small fraction of the diffusive time dx**2/D of one cell; control adapts it.
    h = np.full(B, min(1e-2 * dx * dx / params.D, t_eval[-1] - t_eval[0]))
    k_next = np.ones(B, dtype=np.int64)
    steps = np.zeros(B, dtype=np.int64)
    rejected = np.zeros(B, dtype=np.int64)
    active = np.arange(B) if nt > 1 else np.arange(0)
    for _ in range(max_steps):
        if active.size == 0:
            break
        ta, t_next = t[active], t_eval[k_next[active]]
        ha = h[active]
        landing = ta + 1.05 * ha >= t_next
        ha = np.where(landing, t_next - ta, ha)
        ua = u[active]
        u_new, err_vec = _rodas4_step(ua, ha, params, dx)
        scale = tol * (1.0 + np.maximum(np.abs(ua), np.abs(u_new)))
        err = np.max(np.abs(err_vec) / scale, axis=1)
        ok = np.isfinite(err) & np.isfinite(u_new).all(axis=1)
        acc = ok & (err <= 1.0)
        fac = np.where(ok, 0.9 * np.maximum(err, 1e-12) ** -0.25, 0.2)
        fac = np.clip(fac, 0.2, 6.0)
        fac = np.where(acc, fac, np.minimum(fac, 0.9))
        h[active] = ha * fac
        if np.any(h[active] < 1e-14 * np.maximum(1.0, np.abs(ta))):
            raise RuntimeError("RODAS4 step size underflow in the diffusion-sorption solver")
        idx = active[acc]
        u[idx] = u_new[acc]
        t[idx] = ta[acc] + ha[acc]
        steps[idx] += 1
        rejected[active[~acc]] += 1
        hit = active[acc & landing]
        t[hit] = t_eval[k_next[hit]]
        out[hit, k_next[hit]] = u[hit]
        k_next[hit] += 1
        active = active[k_next[active] < nt]
    else:
        raise RuntimeError(f"RODAS4 did not finish within max_steps={max_steps}")
    return out, {"steps": steps, "rejected": rejected}


# ----------------------------------------------------------------------------------------------
# Reference accurate path: scipy's implicit solvers with the analytic sparse Jacobian.


def scipy_implicit(c0: float, nx: int, t_eval: np.ndarray,
                   params: DiffSorpParams = DiffSorpParams(), *, method: str = "Radau",
                   rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """``solve_ivp(method=Radau|BDF)`` of the clipped system with the exact tridiagonal Jacobian.

    Returns (len(t_eval), nx) float64.
    """
    dx = 1.0 / nx

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        return _rhs_batch(y[None], params, dx)[0][0]

    def jac(t: float, y: np.ndarray) -> sp.csc_matrix:
        _, r, lap = _rhs_batch(y[None], params, dx)
        sub, diag, sup = _jacobian_bands(y[None], r, lap, params, dx)
        return sp.diags([sub[0, 1:], diag[0], sup[0, :-1]], [-1, 0, 1], format="csc")

    sol = solve_ivp(fun, (float(t_eval[0]), float(t_eval[-1])), np.full(nx, float(c0)),
                    method=method, t_eval=t_eval, rtol=rtol, atol=atol, jac=jac)
    if sol.status != 0:
        raise RuntimeError(f"{method} failed for c0={c0}: {sol.message}")
    return sol.y.T.copy()
