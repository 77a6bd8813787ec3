import Foundation

/// Softmax cross-entropy over the vocabulary. Targets < 0 are ignored (Hugging
/// Face's -100 convention), so a sequence's last position can carry no label.
public enum CrossEntropy {
    /// Returns (Σ loss over labelled rows, number of labelled rows, rows whose target is the
    /// top-1 prediction) for logits[n, V]. The prediction is the first index of the largest
    /// logit (torch.argmax's choice on ties), so a tie with an earlier index is a miss.
    /// `stats`, when given, gets every row's largest logit and Σ exp(logit − it) at [2i],
    /// [2i + 1] (unlabelled rows too: a backward may label them): what `backward` would
    /// otherwise find again before its pass over the row.
    public static func forward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                               n: Int, vocab: Int, stats: FPtr? = nil) -> (sum: Double, count: Int, correct: Int) {
        // Rows split over the workers, each row's loss kept and then added in row order: the
        // same sum whatever the number of workers (one model on all of a rank's threads ran
        // this over every row on one thread).
        let loss = UnsafeMutablePointer<Double>.allocate(capacity: n), hit = UnsafeMutablePointer<Bool>.allocate(capacity: n)
        defer { loss.deallocate(); hit.deallocate() }
        Parallel.chunks(n, grain: 16) { rows in
            for i in rows where targets[i] >= 0 || stats != nil {
                let row = logits + i * vocab
                let mx = rowMax(row, vocab), sum = sumExpShifted(row, vocab, shift: mx)
                if let stats { stats[2 * i] = mx; stats[2 * i + 1] = sum }
                guard targets[i] >= 0 else { continue }
                // the prediction: the first index of the largest logit
                var top = 0
                while top + 8 <= vocab && !any(load8(row, top) .== mx) { top += 8 }
                while top < vocab && !(row[top] == mx) { top += 1 }
                if top == vocab { top = 0 }  // a row of NaNs
                loss[i] = Double(Foundation.log(sum) + mx - row[Int(targets[i])])
                hit[i] = top == Int(targets[i])
            }
        }
        var total = 0.0, count = 0, correct = 0
        for i in 0..<n where targets[i] >= 0 {
            total += loss[i]
            count += 1
            if hit[i] { correct += 1 }
        }
        return (total, count, correct)
    }

    /// dlogits = scale · (softmax(logits) − onehot(target)); zero on unlabelled rows.
    /// dlogits may alias logits: each row is read before it is overwritten.
    /// `scale` is 1 / (labelled tokens in the global batch), so micro-batches and
    /// ranks add up to the gradient of the mean loss. `stats`: forward's of these logits, so
    /// that each row takes one pass instead of three (its maximum, its exponentials and their
    /// sum, the scaling); the same bits either way, as forward sums in expShifted's order.
    public static func backward(dlogits: FPtr, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                n: Int, vocab: Int, scale: Float, stats: UnsafePointer<Float>? = nil) {
        Profile.measure(.elementwise) {
            Parallel.chunks(n, grain: 16) { rows in
                for i in rows {
                    let row = logits + i * vocab, d = dlogits + i * vocab
                    guard targets[i] >= 0 else {
                        d.update(repeating: 0, count: vocab)
                        continue
                    }
                    if let stats {
                        expScaled(row, d, vocab, shift: stats[2 * i], by: scale / stats[2 * i + 1])
                    } else {
                        let mx = rowMax(row, vocab)
                        scaleRow(d, vocab, by: scale / expShifted(row, d, vocab, shift: mx))
                    }
                    d[Int(targets[i])] -= scale
                }
            }
        }
    }
}
