import Foundation

/// The cores a rank may use and how its work spends them, decided once when the model is
/// loaded (TrainOptions.threads and .replicas) and passed down: one model whose sgemm and
/// element-wise kernels use every thread (loading, evaluation, the optimizer, clipping), or,
/// during a training step's forward and backward, `replicas` models on one thread each.
/// The BLAS thread count and Parallel.workers change together (BLAS.setThreads), so they stay
/// equal, as Tensor/Parallel.swift states.
struct ThreadBudget {
    let threads: Int
    let replicas: Int

    /// BLAS threads each model uses while the replicas train (summary.json's blas_threads); also
    /// the threads a model's attention spreads its work units over (Attention.Shape.lanes).
    var blasThreadsPerReplica: Int { replicas > 1 ? 1 : threads }

    /// Every thread to one model: the state outside `replicaPhase`.
    func claim() { BLAS.setThreads(threads) }

    /// `body` with one BLAS thread and one element-wise worker for each replica's thread;
    /// every thread to one model again afterwards.
    func replicaPhase<T>(_ body: () throws -> T) rethrows -> T {
        BLAS.setThreads(1)
        defer { BLAS.setThreads(threads) }
        return try body()
    }
}
