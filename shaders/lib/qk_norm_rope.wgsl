// rope.wgsl's entries `norm_rope` and `norm_rope_append` (described in rope.wgsl's header), as rope.wgsl
// (reductions in workgroup memory, lib/reduce.wgsl) and rope_sg.wgsl (subgroup operations,
// lib/reduce_sg.wgsl) include them. The including shader declares `override WG` and includes
// lib/grid.wgsl, lib/rope_core.wgsl and one of the two reduction files.

@group(0) @binding(5) var<storage, read> q_norm_w: array<f32>;
@group(0) @binding(6) var<storage, read> k_norm_w: array<f32>;
@group(0) @binding(7) var<storage, read> v_new: array<f32>;
@group(0) @binding(8) var<storage, read_write> cache_k: array<f32>;
@group(0) @binding(9) var<storage, read_write> cache_v: array<f32>;
@group(0) @binding(10) var<storage, read> step: array<u32>;

// Pair i of a q (xio) or k (out) head row at element `base`, token t: the pair, its norm weights and the
// (sin, cos) of its angle. ok = false past D / 2 (then all zero).
struct NormPair { ok: bool, x0: f32, x1: f32, w0: f32, w1: f32, sc: vec2<f32> }

fn norm_pair(is_q: bool, base: u32, t: u32, i: u32) -> NormPair {
    var r: NormPair;
    r.ok = i < p.half;
    if (!r.ok) { return r; }
    if (is_q) {
        r.x0 = xio[base + i];
        r.x1 = xio[base + i + p.half];
        r.w0 = q_norm_w[i];
        r.w1 = q_norm_w[i + p.half];
    } else {
        r.x0 = out[base + i];
        r.x1 = out[base + i + p.half];
        r.w0 = k_norm_w[i];
        r.w1 = k_norm_w[i + p.half];
    }
    r.sc = sincos(f32(positions[stream(i) * p.pos_stride + t]) * inv_freq[i]);
    return r;
}

// The pair normalised by r (1 / RMS) in the order of the rmsnorm kernel and HF's Qwen3RMSNorm, then rotated.
fn normed_rotated(np: NormPair, r: f32) -> vec2<f32> {
    return rotate((np.x0 * r) * np.w0, (np.x1 * r) * np.w1, np.sc);
}

// 1 / RMS of the row, every thread's: its first pair from registers, pairs past WG re-read (D > 2 WG).
fn row_inv_rms(ln: Lanes, is_q: bool, base: u32, first: NormPair) -> f32 {
    var ss = first.x0 * first.x0 + first.x1 * first.x1;
    for (var i = ln.lid + WG; i < p.half; i += WG) {
        var x0: f32;
        var x1: f32;
        if (is_q) { x0 = xio[base + i]; x1 = xio[base + i + p.half]; } else { x0 = out[base + i]; x1 = out[base + i + p.half]; }
        ss += x0 * x0 + x1 * x1;
    }
    return inverseSqrt(wg_sum(ln, ss) / f32(2u * p.half) + bitcast<f32>(p.eps_bits));
}

// Which row a workgroup normalises: the token, the row's first element, and whether it is of q.
struct HeadRow { is_q: bool, t: u32, base: u32 }

fn head_row(row: u32) -> HeadRow {
    let n_q = p.n_tokens * p.n_heads;
    let is_q = row < n_q;
    let t = select((row - n_q) / p.n_heads2, row / p.n_heads, is_q);
    return HeadRow(is_q, t, select(row - n_q, row, is_q) * 2u * p.half);
}

@compute @workgroup_size(WG)
fn norm_rope(grid: Grid, ln: Lanes) {
    let row = group_index(grid);
    if (row >= p.n_tokens * (p.n_heads + p.n_heads2)) { return; }  // uniform per workgroup
    let h = head_row(row);  // is_q is uniform per workgroup
    let first = norm_pair(h.is_q, h.base, h.t, ln.lid);
    let r = row_inv_rms(ln, h.is_q, h.base, first);
    for (var i = ln.lid; i < p.half; i += WG) {
        var np = first;
        if (i != ln.lid) { np = norm_pair(h.is_q, h.base, h.t, i); }
        let o = normed_rotated(np, r);
        if (h.is_q) {
            xio[h.base + i] = o.x;
            xio[h.base + i + p.half] = o.y;
        } else {
            out[h.base + i] = o.x;
            out[h.base + i + p.half] = o.y;
        }
    }
}

@compute @workgroup_size(WG)
fn norm_rope_append(grid: Grid, ln: Lanes) {
    let row = group_index(grid);
    let n_q = p.n_tokens * p.n_heads;
    let n_k = p.n_tokens * p.n_heads2;
    if (row >= n_q + 2u * n_k) { return; }  // uniform per workgroup
    let d = 2u * p.half;
    if (row >= n_q + n_k) {  // a v row, copied (uniform per workgroup: no barrier on this path)
        let kv_row = row - n_q - n_k;  // token * H2 + head
        let dst = step[0] + kv_row / p.n_heads2;
        if (dst < p.max_len) {
            let o = (dst * p.n_heads2 + kv_row % p.n_heads2) * d;
            for (var i = ln.lid; i < p.half; i += WG) {
                let a = v_new[kv_row * d + i];
                let b = v_new[kv_row * d + i + p.half];
                cache_v[o + i] = a;
                cache_v[o + i + p.half] = b;
            }
        }
        return;
    }
    let h = head_row(row);  // is_q is uniform per workgroup
    let first = norm_pair(h.is_q, h.base, h.t, ln.lid);
    let dst = step[0] + h.t;
    let r = row_inv_rms(ln, h.is_q, h.base, first);
    let cache_base = (dst * p.n_heads2 + (row - n_q) % p.n_heads2) * d;
    for (var i = ln.lid; i < p.half; i += WG) {
        var np = first;
        if (i != ln.lid) { np = norm_pair(h.is_q, h.base, h.t, i); }
        let o = normed_rotated(np, r);
        if (h.is_q) {
            xio[h.base + i] = o.x;
            xio[h.base + i + p.half] = o.y;
        } else if (dst < p.max_len) {
            cache_k[cache_base + i] = o.x;
            cache_k[cache_base + i + p.half] = o.y;
        }
    }
}
