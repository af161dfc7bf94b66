/*
 * fs_sgd_impl.h -- the SGD update over one contiguous range, for one element type and one
 * instruction set.
 *
 * Included by fs_sgd.h with FS_T (float or double), FS_SUF (f32 or f64), FS_ISA (baseline,
 * avx2, avx512) and FS_SGD_FMA(a, b, c) (a*b + c, rounded once where the ISA has FMA)
 * defined.  One pass over memory: each element of param, grad and velocity is read once and
 * param and velocity are written once; nothing else is touched.
 *
 * The update, per element (SPEC section 4, torch.optim.SGD):
 *
 *     d = maximize ? -grad : grad
 *     d = fma(param, wd, d)                          if wd != 0
 *     v = first ? d : fma(d, 1 - dampening, v * mu)   if mu != 0
 *     d = nesterov ? fma(v, mu, d) : v                if mu != 0
 *     param = fma(d, -lr, param)
 *
 * Each line rounds exactly as torch's CPU kernels do (its single-tensor path and the vector
 * body of its fused kernel: add_(alpha) is one FMA, mul_ then add_ is a product rounded and
 * then one FMA), so float32 trajectories agree bit for bit with torch on FMA hardware.  The
 * hyperparameters are rounded to FS_T first, as torch does.
 */
#define FS_FN(name) FS_CAT(FS_CAT(name, FS_SUF), FS_ISA)

/* The loop body with its options as constants: each call site below is specialised. */
static inline __attribute__((always_inline)) void FS_FN(sgd_body)(
    FS_T *restrict p, const FS_T *restrict g, FS_T *restrict v, ptrdiff_t n, FS_T neg_lr, FS_T mu,
    FS_T damp1, FS_T wd, const int maximize, const int decay, const int mom, const int nesterov)
{
    /* mom: 0 = no momentum (v unused), 1 = first step (v written, not read), 2 = v read and written */
    FS_OMP_SIMD
    for (ptrdiff_t i = 0; i < n; i++) {
        FS_T d = maximize ? -g[i] : g[i];
        if (decay) d = FS_SGD_FMA(p[i], wd, d);
        if (mom) {
            FS_T b = mom == 1 ? d : FS_SGD_FMA(d, damp1, v[i] * mu);
            v[i] = b;
            d = nesterov ? FS_SGD_FMA(b, mu, d) : b;
        }
        p[i] = FS_SGD_FMA(d, neg_lr, p[i]);
    }
}

/* One range of one tensor: pick the specialised loop for these hyperparameters. */
static void FS_FN(sgd_range)(void *param, const void *grad, void *velocity, ptrdiff_t n,
                             const fs_sgd_hyper *h, int first)
{
    FS_T *p = (FS_T *)param;
    const FS_T *g = (const FS_T *)grad;
    FS_T *v = (FS_T *)velocity;
    const FS_T neg_lr = (FS_T)(-h->lr);
    const FS_T mu = (FS_T)h->momentum;
    const FS_T damp1 = (FS_T)(1.0 - h->dampening);
    const FS_T wd = (FS_T)h->weight_decay;
    const int mx = h->maximize != 0;
    const int dc = h->weight_decay != 0.0;
    const int mo = h->momentum == 0.0 ? 0 : (first ? 1 : 2);
    const int ne = mo != 0 && h->nesterov != 0;
#define FS_SGD_CASE(MX, DC, MO, NE)                                                            \
    case (MX) | (DC) << 1 | (MO) << 2 | (NE) << 4:                                             \
        FS_FN(sgd_body)(p, g, v, n, neg_lr, mu, damp1, wd, MX, DC, MO, NE);                    \
        break;
#define FS_SGD_CASES_MO(MX, DC) \
    FS_SGD_CASE(MX, DC, 0, 0)   \
    FS_SGD_CASE(MX, DC, 1, 0)   \
    FS_SGD_CASE(MX, DC, 1, 1)   \
    FS_SGD_CASE(MX, DC, 2, 0)   \
    FS_SGD_CASE(MX, DC, 2, 1)
    switch (mx | dc << 1 | mo << 2 | ne << 4) {
        FS_SGD_CASES_MO(0, 0)
        FS_SGD_CASES_MO(0, 1)
        FS_SGD_CASES_MO(1, 0)
        FS_SGD_CASES_MO(1, 1)
    default:
        break;
    }
#undef FS_SGD_CASES_MO
#undef FS_SGD_CASE
}

#undef FS_FN
