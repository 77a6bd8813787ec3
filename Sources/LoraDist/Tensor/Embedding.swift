/// Token embedding: a row gather forward, a row scatter-add backward.
public enum Embedding {
    /// out[n, C] = table[ids[n], C]
    public static func forward(out: FPtr, ids: UnsafePointer<Int32>, table: UnsafePointer<Float>,
                               n: Int, dim: Int) {
        Profile.measure(.elementwise) {
            for i in 0..<n {
                (out + i * dim).update(from: table + Int(ids[i]) * dim, count: dim)
            }
        }
    }

    /// dTable[ids[n], C] += dout[n, C]
    public static func backward(dTable: FPtr, ids: UnsafePointer<Int32>, dout: UnsafePointer<Float>,
                                n: Int, dim: Int) {
        Profile.measure(.elementwise) {
            for i in 0..<n {
                let row = dTable + Int(ids[i]) * dim
                let g = dout + i * dim
                for c in 0..<dim { row[c] += g[c] }
            }
        }
    }
}

/// Residual connection: out = a + b; the gradient flows unchanged to both inputs.
public enum Residual {
    /// out[n] = a[n] + b[n] (out may alias a)
    public static func forward(out: FPtr, a: UnsafePointer<Float>, b: UnsafePointer<Float>, count: Int) {
        Profile.measure(.elementwise) {
            Parallel.chunks(count, grain: 16384) { r in for i in r { out[i] = a[i] + b[i] } }
        }
    }

    /// da += dout (db is dout itself, so callers pass dout on instead of copying it)
    public static func backward(da: FPtr, dout: UnsafePointer<Float>, count: Int) {
        Profile.measure(.elementwise) {
            for i in 0..<count { da[i] += dout[i] }
        }
    }
}
