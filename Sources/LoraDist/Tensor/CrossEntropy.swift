import Foundation

/// Softmax cross-entropy over the vocabulary. Targets < 0 are ignored (Hugging
/// Face's -100 convention), so a sequence's last position can carry no label.
public enum CrossEntropy {
    /// Returns (Σ loss over labelled rows, number of labelled rows, rows whose target is the
    /// top-1 prediction) for logits[n, V]. The prediction is the first index of the largest
    /// logit (torch.argmax's choice on ties), so a tie with an earlier index is a miss.
    public static func forward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                               n: Int, vocab: Int) -> (sum: Double, count: Int, correct: Int) {
        // Rows split over the workers, each row's loss kept and then added in row order: the
        // same sum whatever the number of workers (one model on all of a rank's threads ran
        // this over every row on one thread).
        let loss = UnsafeMutablePointer<Double>.allocate(capacity: n), hit = UnsafeMutablePointer<Bool>.allocate(capacity: n)
        defer { loss.deallocate(); hit.deallocate() }
        Parallel.chunks(n, grain: 16) { rows in
            for i in rows where targets[i] >= 0 {
                let row = logits + i * vocab
                // the largest logit, then its first index
                let mx = rowMax(row, vocab)
                var top = 0
                while top + 8 <= vocab && !any(load8(row, top) .== mx) { top += 8 }
                while top < vocab && !(row[top] == mx) { top += 1 }
                if top == vocab { top = 0 }  // a row of NaNs
                loss[i] = Double(Foundation.log(sumExpShifted(row, vocab, shift: mx)) + mx - row[Int(targets[i])])
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
    /// ranks add up to the gradient of the mean loss.
    public static func backward(dlogits: FPtr, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                n: Int, vocab: Int, scale: Float) {
        Profile.measure(.elementwise) {
            Parallel.chunks(n, grain: 16) { rows in
                for i in rows {
                    let row = logits + i * vocab, d = dlogits + i * vocab
                    guard targets[i] >= 0 else {
                        d.update(repeating: 0, count: vocab)
                        continue
                    }
                    let mx = rowMax(row, vocab)
                    scaleRow(d, vocab, by: scale / expShifted(row, d, vocab, shift: mx))
                    d[Int(targets[i])] -= scale
                }
            }
        }
    }
}
