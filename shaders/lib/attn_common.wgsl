// attention.wgsl's and attention_sg.wgsl's view of q and the cache, read-only: the bindings of `main` (also
// those of `decode` and `split_partial`), and lib/attn_decode.wgsl's query read from q.

// #include "lib/attn_params.wgsl"

@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cache_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cache_v: array<vec4<f32>>;

// Vec4 n of the query row whose first vec4 is qb.
fn dec_q(qb: u32, n: u32) -> vec4<f32> {
    return q[qb + n];
}
