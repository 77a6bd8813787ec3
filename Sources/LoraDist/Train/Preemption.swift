import Foundation

/// SIGTERM (what Slurm and cloud schedulers send before taking a node) and SIGINT (Ctrl-C)
/// ask the run to stop at the end of the current step: every rank finishes it, a checkpoint
/// is saved, and the job exits with `exitCode`. A second SIGINT ends the process at once.
public enum Preemption {
    /// EX_TEMPFAIL: interrupted on purpose, resume with the same command plus `--resume latest`.
    public static let exitCode: Int32 = 75

    nonisolated(unsafe) static var requested: sig_atomic_t = 0

    public static func install() {
        signal(SIGTERM) { _ in Preemption.requested = 1 }
        signal(SIGINT) { _ in
            Preemption.requested = 1
            signal(SIGINT, SIG_DFL)   // async-signal-safe: the next Ctrl-C is not deferred
        }
    }

    public static var isRequested: Bool { requested != 0 }
}
