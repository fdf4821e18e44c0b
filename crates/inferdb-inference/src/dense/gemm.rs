//! The dense layer kernel: `Y = act(X · B + bias)` for a row-major `X` of
//! `n × k` floats and a weight matrix `B` (`k × m`) packed once at load.
//!
//! `B` is stored as panels of [`NR`] = 32 output columns: panel `p` holds, for
//! every `kk < k`, the 32 values `B[kk][32p .. 32p + 32]` (zero past `m`), so
//! the kernel reads each panel front to back. The bias is padded the same way.
//!
//! Which kernel runs is chosen once, when the weights are packed, from what
//! the CPU supports ([`Isa`]):
//! - AVX-512F: a tile of up to 8 rows × 32 columns (or 4 × 64, 2 × 128 for
//!   short batches, so one row still has 8 independent FMA chains) stays in
//!   16 of the 32 vector registers while the kernel walks `k`, loading each
//!   weight vector once per tile and broadcasting the input values;
//! - AVX2 with FMA (most AMD and older Intel server CPUs): the same walk with
//!   8-float vectors in 16 registers, tiles of 6 rows × 16 columns (4 × 24,
//!   3 × 32, 2 × 48, 1 × 64 for shorter batches: 8 to 12 accumulators, the
//!   rest of the registers for the weights and the broadcast input);
//! - anything else: a portable loop over the same panels that the compiler
//!   vectorises for the baseline target (SSE2 on x86-64).
//!
//! In the SIMD kernels the bias initialises the accumulators and ReLU is
//! applied on the way out. Every kernel the CPU supports is tested against a
//! naive triple loop (and so against the others).
//!
//! This is one of the two modules of inferdb with `unsafe` code (the other,
//! `inferdb-features`'s `prefetch.rs`, only issues prefetch hints): the
//! intrinsics read and write through raw pointers. [`gemm`] checks every
//! length the kernels rely on before one runs, and a kernel only runs after
//! the CPU has been seen to support its instructions.
#![allow(unsafe_code)]

use crate::error::InferenceError;

/// Output columns per weight panel.
pub(crate) const NR: usize = 32;

/// Floats per cache line.
const LINE: usize = 16;

/// One cache line of packed weights. Holding the panels in these puts
/// every panel row (`NR` floats, two lines) on a line boundary, so a
/// kernel's vector loads never straddle two lines (a 32-byte AVX2 load
/// straddled every other time in a `Vec<f32>` that happened to be 32 bytes
/// off; a 64-byte AVX-512 load straddles whenever the start is not
/// aligned). On the AMD EPYC (AVX2) VM, a standalone copy of the AVX2
/// kernel took 3–6 % less time on the 256×256 and 256×128 layers at batch
/// 64 with aligned panels; in the criterion `ensemble` bench the VM's noise
/// (±30 % between runs minutes apart) was larger than that.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; LINE]);

const _: () = assert!(std::mem::size_of::<Line>() == LINE * 4 && NR.is_multiple_of(LINE));

/// A weight matrix and bias packed for [`gemm`].
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    k: usize,
    m: usize,
    /// `panels() × k × NR` values, in lines (see [`Packed::panels`]).
    lines: Vec<Line>,
    /// `panels() × NR` values.
    bias: Vec<f32>,
    isa: Isa,
}

/// The instruction set a [`Packed`] matrix is multiplied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Isa {
    /// Plain Rust loops (any CPU).
    Portable,
    /// x86-64 AVX2 and FMA.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
}

impl Isa {
    /// The widest kernel this CPU runs.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Whether this CPU runs the kernel of `self`.
    #[cfg(test)]
    fn supported(self) -> bool {
        // Every AVX-512F CPU also has AVX2 and FMA.
        match self {
            Isa::Portable => true,
            Isa::Avx2 => Isa::detect() != Isa::Portable,
            Isa::Avx512 => Isa::detect() == Isa::Avx512,
        }
    }
}

impl Packed {
    /// Packs the `k × m` matrix whose element at row `kk`, column `j` is
    /// `b(kk, j)`, with `bias(j)` added to column `j`.
    pub(crate) fn new(
        k: usize,
        m: usize,
        b: impl Fn(usize, usize) -> f32,
        bias: impl Fn(usize) -> f32,
    ) -> Packed {
        let n_panels = m.div_ceil(NR);
        let mut lines = vec![Line([0.0; LINE]); n_panels * k * NR / LINE];
        for p in 0..n_panels {
            for kk in 0..k {
                let at = (p * k + kk) * NR;
                for j in 0..NR.min(m - p * NR) {
                    let i = at + j;
                    lines[i / LINE].0[i % LINE] = b(kk, p * NR + j);
                }
            }
        }
        let mut padded = vec![0.0f32; n_panels * NR];
        for (j, v) in padded.iter_mut().enumerate().take(m) {
            *v = bias(j);
        }
        Packed {
            k,
            m,
            lines,
            bias: padded,
            isa: Isa::detect(),
        }
    }

    /// Output columns.
    pub(crate) fn m(&self) -> usize {
        self.m
    }

    fn n_panels(&self) -> usize {
        self.m.div_ceil(NR)
    }

    /// The packed panels as floats, starting on a cache line.
    fn panels(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `LINE` f32s with no padding
        // (its size, 64 bytes, is its alignment), so the vector's lines are
        // `len × LINE` contiguous, initialised f32s, borrowed with it.
        unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.lines.len() * LINE)
        }
    }

    /// The same weights, run by another kernel (for tests).
    #[cfg(test)]
    fn on(mut self, isa: Isa) -> Packed {
        self.isa = isa;
        self
    }
}

/// `y[r][j] = act(Σ_kk x[r][kk] · B[kk][j] + bias[j])` for `r < n`, `j < m`,
/// where act is ReLU when `relu` is set. `x` holds `n × k` values and `y`
/// `n × m`; other lengths are an internal error.
pub(crate) fn gemm(
    x: &[f32],
    n: usize,
    w: &Packed,
    relu: bool,
    y: &mut [f32],
) -> Result<(), InferenceError> {
    let (k, m) = (w.k, w.m);
    let fits = n.checked_mul(k) == Some(x.len())
        && n.checked_mul(m) == Some(y.len())
        && w.panels().len() == w.n_panels() * k * NR
        && w.bias.len() == w.n_panels() * NR;
    if !fits {
        return Err(InferenceError::Internal(format!(
            "dense layer: {} input values and {} output slots for {n} rows of {k} -> {m}",
            x.len(),
            y.len()
        )));
    }
    if n == 0 || m == 0 {
        return Ok(());
    }
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (seen when `w` was packed), and
        // the lengths the kernel indexes by were checked just above.
        Isa::Avx512 => unsafe { avx512::gemm(x, n, w, relu, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 and FMA (seen when `w` was packed),
        // and the lengths were checked just above.
        Isa::Avx2 => unsafe { avx2::gemm(x, n, w, relu, y) },
        _ => portable(x, n, w, relu, y),
    }
    Ok(())
}

/// The same computation with plain loops over the panels.
fn portable(x: &[f32], n: usize, w: &Packed, relu: bool, y: &mut [f32]) {
    let (k, m) = (w.k, w.m);
    let panels = w.panels();
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(m)).take(n) {
        for (p, panel) in panels.chunks_exact(k * NR).enumerate() {
            let mut acc = [0.0f32; NR];
            acc.copy_from_slice(&w.bias[p * NR..(p + 1) * NR]);
            accumulate(xr, panel, &mut acc);
            let col0 = p * NR;
            let cols = NR.min(m - col0);
            for (dst, &v) in yr[col0..col0 + cols].iter_mut().zip(&acc) {
                *dst = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

/// `acc[j] += Σ_kk xr[kk] · panel[kk][j]` over one panel. Kept out of line:
/// inlined into [`portable`], rustc 1.95 unrolled the 32 lanes into scalar
/// multiplies and adds (`mulss`/`addss` on x86-64, about 5× slower), while
/// on its own, with the accumulator behind a reference to a fixed-size
/// array, the loop is vectorised for the baseline target (`mulps`/`addps`).
#[inline(never)]
fn accumulate(xr: &[f32], panel: &[f32], acc: &mut [f32; NR]) {
    for (&a, row) in xr.iter().zip(panel.chunks_exact(NR)) {
        for (s, &b) in acc.iter_mut().zip(row) {
            *s += a * b;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_max_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use super::{NR, Packed};

    /// Floats per vector register.
    const L: usize = 16;

    /// Runs the whole product, 8 rows at a time (the last rows in a narrower
    /// tile that covers more columns).
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `x` holds `n × w.k` values, `y` `n × w.m`,
    /// and `w`'s panels and bias have their packed lengths.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(x: &[f32], n: usize, w: &Packed, relu: bool, y: &mut [f32]) {
        let mut r = 0;
        while r < n {
            let rows = (n - r).min(12);
            let a = &x[r * w.k..];
            let c = &mut y[r * w.m..];
            // SAFETY: forwarded from the caller; `a` and `c` start at row `r`
            // and hold at least `rows` rows.
            unsafe {
                match rows {
                    12 => block::<12, 2>(a, w, relu, c),
                    11 => block::<11, 2>(a, w, relu, c),
                    10 => block::<10, 2>(a, w, relu, c),
                    9 => block::<9, 2>(a, w, relu, c),
                    8 => block::<8, 2>(a, w, relu, c),
                    7 => block::<7, 2>(a, w, relu, c),
                    6 => block::<6, 4>(a, w, relu, c),
                    5 => block::<5, 4>(a, w, relu, c),
                    4 => block::<4, 4>(a, w, relu, c),
                    3 => block::<3, 4>(a, w, relu, c),
                    2 => block::<2, 8>(a, w, relu, c),
                    _ => block::<1, 8>(a, w, relu, c),
                }
            }
            r += rows;
        }
    }

    /// `MR` rows of `a` against every panel, `NV / 2` panels per tile.
    ///
    /// # Safety
    /// As [`gemm`], with `a` holding `MR × k` values and `c` `MR × m`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const MR: usize, const NV: usize>(
        a: &[f32],
        w: &Packed,
        relu: bool,
        c: &mut [f32],
    ) {
        let panels = w.n_panels();
        let per_tile = NV / 2;
        let mut p = 0;
        while p + per_tile <= panels {
            // SAFETY: panels p .. p + per_tile exist.
            unsafe { tile::<MR, NV>(a, w, p, relu, c) };
            p += per_tile;
        }
        while p < panels {
            // SAFETY: panel p exists.
            unsafe { tile::<MR, 2>(a, w, p, relu, c) };
            p += 1;
        }
    }

    /// One tile: rows `0..MR` × columns `32p .. 32p + 16·NV`, accumulated in
    /// `MR × NV` registers over all of `k`.
    ///
    /// # Safety
    /// As [`block`], with panels `p .. p + NV / 2` present in `w`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const MR: usize, const NV: usize>(
        a: &[f32],
        w: &Packed,
        p: usize,
        relu: bool,
        c: &mut [f32],
    ) {
        let (k, m) = (w.k, w.m);
        let a = a.as_ptr();
        let b = w.panels().as_ptr();
        let panel_len = k * NR;
        let col0 = p * NR;
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for (j, v) in acc[0].iter_mut().enumerate() {
            // SAFETY: the bias holds every panel's NR values.
            *v = unsafe { _mm512_loadu_ps(w.bias.as_ptr().add(col0 + j * L)) };
        }
        for r in 1..MR {
            acc[r] = acc[0];
        }
        // Start of each vector's column slice in the panels, for kk = 0.
        let mut starts = [0usize; NV];
        for (j, s) in starts.iter_mut().enumerate() {
            *s = (p + j / 2) * panel_len + (j % 2) * L;
        }
        for kk in 0..k {
            let mut bv: [__m512; NV] = [_mm512_setzero_ps(); NV];
            for j in 0..NV {
                // SAFETY: panel p + j/2 exists and kk < k.
                bv[j] = unsafe { _mm512_loadu_ps(b.add(starts[j] + kk * NR)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: r < MR rows of k values in `a`.
                let av = _mm512_set1_ps(unsafe { *a.add(r * k + kk) });
                for (s, &bj) in row.iter_mut().zip(&bv) {
                    *s = _mm512_fmadd_ps(av, bj, *s);
                }
            }
        }
        let zero = _mm512_setzero_ps();
        let out = c.as_mut_ptr();
        for (r, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let col = col0 + j * L;
                if col >= m {
                    break;
                }
                let v = if relu { _mm512_max_ps(v, zero) } else { v };
                let dst = r * m + col;
                let left = m - col;
                // SAFETY: row r < MR of m values in `c`; at most `left`
                // values are written from column `col`.
                unsafe {
                    if left >= L {
                        _mm512_storeu_ps(out.add(dst), v);
                    } else {
                        let mask = ((1u32 << left) - 1) as u16;
                        _mm512_mask_storeu_ps(out.add(dst), mask, v);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::{NR, Packed};

    /// Floats per vector register.
    const L: usize = 8;
    /// Vectors per weight panel.
    const PER_PANEL: usize = NR / L;

    /// Runs the whole product, 6 rows at a time (the last rows in a shorter
    /// tile that covers more columns).
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `x` holds `n × w.k` values, `y`
    /// `n × w.m`, and `w`'s panels and bias have their packed lengths.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm(x: &[f32], n: usize, w: &Packed, relu: bool, y: &mut [f32]) {
        let mut r = 0;
        while r < n {
            let rows = (n - r).min(6);
            let a = &x[r * w.k..];
            let c = &mut y[r * w.m..];
            // SAFETY: forwarded from the caller; `a` and `c` start at row `r`
            // and hold at least `rows` rows.
            unsafe {
                match rows {
                    6 => block::<6, 2>(a, w, relu, c),
                    5 => block::<5, 2>(a, w, relu, c),
                    4 => block::<4, 3>(a, w, relu, c),
                    3 => block::<3, 4>(a, w, relu, c),
                    2 => block::<2, 6>(a, w, relu, c),
                    _ => block::<1, 8>(a, w, relu, c),
                }
            }
            r += rows;
        }
    }

    /// `MR` rows of `a` against every output vector (8 columns), `NV`
    /// vectors per tile, the ones left over in tiles of one vector.
    ///
    /// # Safety
    /// As [`gemm`], with `a` holding `MR × k` values and `c` `MR × m`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const MR: usize, const NV: usize>(
        a: &[f32],
        w: &Packed,
        relu: bool,
        c: &mut [f32],
    ) {
        let vectors = w.m.div_ceil(L);
        let mut v = 0;
        while v + NV <= vectors {
            // SAFETY: vectors v .. v + NV hold output columns below m.
            unsafe { tile::<MR, NV>(a, w, v, relu, c) };
            v += NV;
        }
        while v < vectors {
            // SAFETY: vector v holds output columns below m.
            unsafe { tile::<MR, 1>(a, w, v, relu, c) };
            v += 1;
        }
    }

    /// One tile: rows `0..MR` × columns `8·v0 .. 8·(v0 + NV)`, accumulated
    /// in `MR × NV` registers over all of `k`. The vectors may straddle
    /// weight panels.
    ///
    /// # Safety
    /// As [`block`], with `8·v0 < m` (so every vector of the tile lies in a
    /// packed panel: the panels cover `m` rounded up to 32 columns).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const MR: usize, const NV: usize>(
        a: &[f32],
        w: &Packed,
        v0: usize,
        relu: bool,
        c: &mut [f32],
    ) {
        let (k, m) = (w.k, w.m);
        let a = a.as_ptr();
        let b = w.panels().as_ptr();
        let panel_len = k * NR;
        // Start of each vector's column slice in the panels, for kk = 0.
        let mut starts = [0usize; NV];
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        for (j, s) in starts.iter_mut().enumerate() {
            let v = v0 + j;
            *s = (v / PER_PANEL) * panel_len + (v % PER_PANEL) * L;
            // SAFETY: the bias holds every panel's NR values, and vector v
            // lies in a panel.
            acc[0][j] = unsafe { _mm256_loadu_ps(w.bias.as_ptr().add(v * L)) };
        }
        for r in 1..MR {
            acc[r] = acc[0];
        }
        for kk in 0..k {
            let mut bv: [__m256; NV] = [_mm256_setzero_ps(); NV];
            for j in 0..NV {
                // SAFETY: vector v0 + j lies in a panel, and kk < k.
                bv[j] = unsafe { _mm256_loadu_ps(b.add(starts[j] + kk * NR)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: r < MR rows of k values in `a`.
                let av = _mm256_set1_ps(unsafe { *a.add(r * k + kk) });
                for (s, &bj) in row.iter_mut().zip(&bv) {
                    *s = _mm256_fmadd_ps(av, bj, *s);
                }
            }
        }
        let zero = _mm256_setzero_ps();
        let out = c.as_mut_ptr();
        for (r, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let col = (v0 + j) * L;
                if col >= m {
                    break;
                }
                let v = if relu { _mm256_max_ps(v, zero) } else { v };
                let dst = r * m + col;
                let left = m - col;
                if left >= L {
                    // SAFETY: row r < MR of m values in `c`, and columns
                    // col .. col + L are below m.
                    unsafe { _mm256_storeu_ps(out.add(dst), v) };
                } else {
                    let mut last = [0.0f32; L];
                    // SAFETY: `last` holds L floats; row r < MR of m values
                    // in `c` has the `left` columns from col.
                    unsafe {
                        _mm256_storeu_ps(last.as_mut_ptr(), v);
                        std::ptr::copy_nonoverlapping(last.as_ptr(), out.add(dst), left);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A small deterministic generator (no dependency needed).
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(x: &[f32], n: usize, k: usize, b: &[f32], m: usize, bias: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; n * m];
        for r in 0..n {
            for j in 0..m {
                let mut s = bias[j] as f64;
                for kk in 0..k {
                    s += x[r * k + kk] as f64 * b[kk * m + j] as f64;
                }
                y[r * m + j] = s as f32;
            }
        }
        y
    }

    fn check(n: usize, k: usize, m: usize, relu: bool) {
        let x = values(n as u64 * 31 + k as u64, n * k);
        let b = values(m as u64 * 7 + 3, k * m);
        let bias = values(k as u64 + 11, m);
        let want: Vec<f32> = naive(&x, n, k, &b, m, &bias)
            .into_iter()
            .map(|v| if relu { v.max(0.0) } else { v })
            .collect();
        let packed = Packed::new(k, m, |kk, j| b[kk * m + j], |j| bias[j]);
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
            if !isa.supported() {
                continue;
            }
            let w = packed.clone().on(isa);
            // Garbage in the output must be overwritten.
            let mut y = vec![f32::NAN; n * m];
            gemm(&x, n, &w, relu, &mut y).unwrap();
            for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{isa:?} n={n} k={k} m={m} relu={relu}: y[{i}] = {g}, want {e}"
                );
            }
        }
    }

    #[test]
    fn every_tile_shape_and_ragged_edge_equals_the_naive_product() {
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 64] {
            for (k, m) in [(1, 1), (3, 5), (16, 16), (17, 33), (64, 100), (256, 10)] {
                check(n, k, m, n % 2 == 0);
            }
        }
        check(64, 256, 256, true);
        check(1, 256, 256, false);
    }

    #[test]
    fn every_panel_row_starts_on_a_cache_line() {
        for (k, m) in [(1, 1), (3, 33), (256, 256), (7, 100)] {
            let w = Packed::new(k, m, |kk, j| (kk * 1000 + j) as f32, |_| 0.0);
            let panels = w.panels();
            assert_eq!(panels.len(), m.div_ceil(NR) * k * NR);
            assert_eq!(panels.as_ptr() as usize % 64, 0);
            // The layout is unchanged: panel p, row kk, column j.
            for p in 0..m.div_ceil(NR) {
                for kk in 0..k {
                    for j in 0..NR {
                        let col = p * NR + j;
                        let want = if col < m {
                            (kk * 1000 + col) as f32
                        } else {
                            0.0
                        };
                        assert_eq!(panels[(p * k + kk) * NR + j], want);
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_an_error_not_a_panic() {
        let w = Packed::new(4, 3, |_, _| 1.0, |_| 0.0);
        let mut y = vec![0.0; 6];
        assert!(gemm(&[0.0; 7], 2, &w, false, &mut y).is_err());
        assert!(gemm(&[0.0; 8], 2, &w, false, &mut y[..5]).is_err());
        assert!(gemm(&[0.0; 8], 2, &w, false, &mut y).is_ok());
        assert_eq!(y, vec![4.0 * 0.0; 6]);
    }
}
