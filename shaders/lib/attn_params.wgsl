// What every attention entry shares (attention.wgsl's, lib/attn_decode.wgsl's, attention_rope.wgsl's): the
// params, the bindings of params, step and out, and each query row's key range. The bindings of q and the
// cache are the including shader's: read-only in lib/attn_common.wgsl, read_write where a decode entry
// appends to the cache itself (lib/attn_decode_rope.wgsl).

struct AttnParams {
    n_tokens: u32, n_heads: u32, n_kv: u32, d4: u32,
    max_len: u32, window: u32, scale: f32, split: u32,
    n_splits: u32, sec_h: u32, sec_w: u32, eps_bits: u32,
}

@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

const NEG_BIG: f32 = -3.0e38;  // stands in for -inf: WGSL lets implementations assume no infinities

struct Row { th: u32, kvh: u32, lo: u32, hi: u32 }

// Query row th = t * Hq + h and its key range [lo, hi); start = step[0], the first new token's position.
fn row_of(th: u32, start: u32) -> Row {
    let t = th / p.n_heads;
    let h = th % p.n_heads;
    let pos = start + t;
    var r: Row;
    r.th = th;
    r.kvh = h / (p.n_heads / p.n_kv);
    r.hi = min(pos + 1u, p.max_len);
    r.lo = 0u;
    if (p.window > 0u && pos + 1u > p.window) { r.lo = pos + 1u - p.window; }
    return r;
}
