// rope.wgsl's entries `norm_rope` and `norm_rope_append` (described in rope.wgsl's header), as rope.wgsl
// (reductions in workgroup memory, lib/reduce.wgsl) and rope_sg.wgsl (subgroup operations,
// lib/reduce_sg.wgsl) include them. The including shader declares `override WG` (>= NORM_T) and includes
// lib/grid.wgsl, lib/rope_core.wgsl and one of the two reduction files. The per-pair math is
// lib/qk_norm.wgsl's, which the decode attention that normalises its own query and key shares.

@group(0) @binding(5) var<storage, read> q_norm_w: array<f32>;
@group(0) @binding(6) var<storage, read> k_norm_w: array<f32>;
@group(0) @binding(7) var<storage, read> v_new: array<f32>;
@group(0) @binding(8) var<storage, read_write> cache_k: array<f32>;
@group(0) @binding(9) var<storage, read_write> cache_v: array<f32>;
@group(0) @binding(10) var<storage, read> step: array<u32>;

// #include "lib/qk_norm.wgsl"

// q rows are normalised in place (xio), k rows in `out`.
fn head_pair(h: HeadRow, i: u32) -> vec2<f32> {
    if (h.is_q) { return vec2<f32>(xio[h.base + i], xio[h.base + i + p.half]); }
    return vec2<f32>(out[h.base + i], out[h.base + i + p.half]);
}

fn norm_shape() -> NormShape {
    return NormShape(p.half, p.pos_stride, bitcast<f32>(p.eps_bits), sections());
}

// Which row a workgroup normalises: workgroups 0 .. T * H - 1 the q rows, then the k rows.
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
    let s = norm_shape();
    let h = head_row(row);  // is_q is uniform per workgroup
    let first = first_pair(s, h, ln.lid);
    let r = row_inv_rms(ln, s, h, first);
    for (var i = ln.lid; owns_pair(s, i, ln.lid); i += NORM_T) {
        let o = normed_rotated(s, h, first, i, ln.lid, r);
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
    let s = norm_shape();
    let h = head_row(row);  // is_q is uniform per workgroup
    let first = first_pair(s, h, ln.lid);
    let dst = step[0] + h.t;
    let r = row_inv_rms(ln, s, h, first);
    let cache_base = (dst * p.n_heads2 + (row - n_q) % p.n_heads2) * d;
    for (var i = ln.lid; owns_pair(s, i, ln.lid); i += NORM_T) {
        let o = normed_rotated(s, h, first, i, ln.lid, r);
        if (h.is_q) {
            xio[h.base + i] = o.x;
            xio[h.base + i + p.half] = o.y;
        } else if (dst < p.max_len) {
            cache_k[cache_base + i] = o.x;
            cache_k[cache_base + i + p.half] = o.y;
        }
    }
}
