import CMPI
import Foundation

/// Collectives with a deadline: a rank that stops responding (SIGSTOP, a hung node, a rank
/// stuck outside MPI) ends the job within `seconds` with one line naming it, instead of
/// leaving every other rank waiting forever. (A rank that dies is mpirun's to notice: it
/// ends the job in about 2 s.)
///
/// How: every collective the program waits on is started non-blocking and waited for in
/// a loop of MPI_Test (`Request.wait`), which costs what MPI_Wait costs while the
/// collective is fast (MPI_Wait polls the same progress engine). When a wait has lasted
/// 50 ms the loop also serves a control channel (a duplicate of the world communicator,
/// one posted receive): after ¾ of the timeout the waiting rank asks every other rank
/// "are you there?", and every rank that is itself waiting in a collective answers
/// within 50 ms. At the timeout, the ranks that have not answered are the ones that did
/// not arrive: the lowest rank that did answer prints one line naming them (rank and
/// host) and calls MPI_Abort, which ends every process of the job. A rank that is alive
/// but outside MPI (computing, writing a file) does not answer either: it is named as
/// well, for it is what the others are waiting for. When every rank answers, they are all
/// waiting in different collectives (or the network stalled): the line says so.
///
/// Not covered: MPI_Init and MPI_Finalize, and the blocking MPI_Allreduce that
/// `bench allreduce` measures. The start-up collectives that have no non-blocking form
/// (communicator splits, the shared window's allocation) are preceded by a timed barrier.
public enum CollectiveTimeout {
    /// Seconds a collective may wait for the slowest rank when neither --collective-timeout
    /// nor LORA_DIST_COLLECTIVE_TIMEOUT says otherwise.
    public static let defaultSeconds = 300.0
    /// The valid timeouts; 0 turns the timeout off (wait forever, as plain MPI does).
    public static let range = 1.0...604_800.0
    public static let environmentVariable = "LORA_DIST_COLLECTIVE_TIMEOUT"
    /// What a job that timed out exits with (mpirun passes on MPI_Abort's code).
    public static let exitCode: Int32 = 1

    /// --collective-timeout: set before the first collective (before `Cluster()`); it wins
    /// over the environment.
    nonisolated(unsafe) public static var requested: Double?
    /// The timeout in force, settled when MPI starts (`MPIRuntime.initialize`); 0: off.
    nonisolated(unsafe) public internal(set) static var seconds = defaultSeconds
    /// What the program is doing, for the message ("step 12", "the evaluation after step 12").
    nonisolated(unsafe) public static var phase = ""

    /// Checks a timeout against `range` (or 0); `name` says where it came from.
    public static func check(_ value: Double, name: String) throws {
        guard value == 0 || range.contains(value) else {
            throw LoraDistError("\(name) must be 0 (no timeout) or a number of seconds in \(Int(range.lowerBound))...\(Int(range.upperBound)), got \(value)")
        }
    }

    /// The timeout from --collective-timeout, else LORA_DIST_COLLECTIVE_TIMEOUT, else the default.
    static func resolve() throws -> Double {
        if let requested {
            try check(requested, name: "--collective-timeout")
            return requested
        }
        guard let text = ProcessInfo.processInfo.environment[environmentVariable] else { return defaultSeconds }
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)) else {
            throw LoraDistError("\(environmentVariable) must be 0 (no timeout) or a number of seconds in \(Int(range.lowerBound))...\(Int(range.upperBound)), got '\(text)'")
        }
        try check(value, name: environmentVariable)
        return value
    }
}

/// The control channel of one rank and the timed wait (see `CollectiveTimeout`). Built by
/// `MPIRuntime.initialize` when the world has more than one rank; used on the thread that
/// calls MPI (MPI_THREAD_SERIALIZED).
final class HangWatch {
    private let comm: MPI_Comm?
    let rank: Int
    let size: Int
    /// Every rank's host name, gathered at start-up: the message names the missing ranks' hosts.
    let hosts: [String]
    // A message is [kind, sender, epoch]: an inquiry, or a reply to the inquiry of `epoch`.
    private static let inquiry: Int64 = 1, reply: Int64 = 2, words: Int32 = 3
    private let inbox = UnsafeMutablePointer<Int64>.allocate(capacity: 3)
    private var inboxRequest: MPI_Request?
    private var outgoing: [(request: MPI_Request?, buffer: UnsafeMutablePointer<Int64>)] = []
    private var epoch: Int64 = 0
    /// Seconds between two visits of the control channel during one wait.
    private static let serviceInterval = 0.05
    /// A pause this long between two polls means this rank itself was not running (stopped,
    /// then continued): the pause is not counted against the others.
    private static let stall = 1.0
    /// The process that launched this rank (mpirun, orted, slurmstepd): when it is gone the
    /// job is over, and a rank still waiting (one that was stopped, then continued as
    /// mpirun ended the job) exits at once instead of waiting out the timeout.
    private let launcher = getppid()

    /// Collective over the world (MPI_Comm_dup and one allgather).
    init() {
        var dup: MPI_Comm?
        MPI_Comm_dup(cmpi_comm_world(), &dup)
        comm = dup
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(dup, &r)
        MPI_Comm_size(dup, &s)
        rank = Int(r)
        size = Int(s)
        let width = 256
        var mine = [CChar](repeating: 0, count: width)
        gethostname(&mine, width - 1)
        var all = [CChar](repeating: 0, count: width * size)
        MPI_Allgather(&mine, Int32(width), cmpi_byte(), &all, Int32(width), cmpi_byte(), dup)
        hosts = (0..<size).map { i in
            String(decoding: all[(i * width)..<((i + 1) * width)].prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        post()
    }

    private func post() {
        MPI_Irecv(inbox, Self.words, cmpi_int64(), cmpi_any_source(), 0, comm, &inboxRequest)
    }

    /// Cancels the posted receive (before MPI_Finalize).
    func close() {
        if inboxRequest != nil {
            MPI_Cancel(&inboxRequest)
            MPI_Wait(&inboxRequest, cmpi_status_ignore())
        }
        for i in outgoing.indices { MPI_Request_free(&outgoing[i].request) }
    }

    private func send(_ message: [Int64], to peer: Int) {
        let buffer = UnsafeMutablePointer<Int64>.allocate(capacity: message.count)
        buffer.initialize(from: message, count: message.count)
        var request: MPI_Request?
        MPI_Isend(buffer, Int32(message.count), cmpi_int64(), Int32(peer), 0, comm, &request)
        outgoing.append((request, buffer))
    }

    private static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Waits for `handle` to complete, or ends the job when it has waited `timeout` seconds.
    /// `what` names the collective ("node barrier") in the message.
    func wait(_ handle: inout MPI_Request?, timeout: Double, what: () -> String) {
        var flag: Int32 = 0
        var start = Self.now(), last = start
        var nextService = start + Self.serviceInterval
        epoch += 1
        let myEpoch = epoch
        var inquired = false
        var present: Set<Int> = [rank]  // ranks known to be waiting in a collective during this wait
        while true {
            MPI_Test(&handle, &flag, cmpi_status_ignore())
            if flag != 0 { handle = nil; return }
            let t = Self.now()
            if t - last > Self.stall { start += t - last }
            last = t
            guard t >= nextService else { continue }
            nextService = t + Self.serviceInterval
            if getppid() != launcher { _exit(CollectiveTimeout.exitCode) }
            serve(epoch: myEpoch, present: &present)
            let waited = t - start
            if !inquired && waited >= 0.75 * timeout {
                inquired = true
                for peer in 0..<size where peer != rank { send([Self.inquiry, Int64(rank), myEpoch], to: peer) }
            }
            // The lowest rank that answered reports; the others give it a few seconds
            // before reporting themselves (MPI_Abort from it ends them first).
            if waited >= timeout && (present.min() == rank || waited >= timeout + max(5, 0.5 * timeout)) {
                let missing = (0..<size).filter { !present.contains($0) }
                MPIRuntime.abort(Self.message(missing: missing, hosts: hosts, rank: rank, waited: waited, timeout: timeout,
                                              what: what(), phase: CollectiveTimeout.phase),
                                 code: CollectiveTimeout.exitCode)
            }
        }
    }

    /// Answers inquiries and records replies to this wait's inquiry (and inquirers: they wait too).
    private func serve(epoch: Int64, present: inout Set<Int>) {
        var flag: Int32 = 0
        while true {
            MPI_Test(&inboxRequest, &flag, cmpi_status_ignore())
            guard flag != 0 else { break }
            let kind = inbox[0], sender = Int(inbox[1]), theirEpoch = inbox[2]
            if sender >= 0 && sender < size {
                if kind == Self.inquiry {
                    present.insert(sender)
                    send([Self.reply, Int64(rank), theirEpoch], to: sender)
                } else if kind == Self.reply && theirEpoch == epoch {
                    present.insert(sender)
                }
            }
            post()
        }
        outgoing.removeAll { item in
            var request = item.request
            MPI_Test(&request, &flag, cmpi_status_ignore())
            if flag != 0 { item.buffer.deallocate() }
            return flag != 0
        }
    }

    /// One line: who did not arrive (ranks and hosts; a whole node by name), where this rank waited.
    static func message(missing: [Int], hosts: [String], rank: Int, waited: Double, timeout: Double, what: String,
                        phase: String) -> String {
        let phase = phase.isEmpty ? "" : " of \(phase)"
        let limit = "--collective-timeout \(seconds(timeout)) s"
        guard !missing.isEmpty else {
            return "every rank has waited more than \(limit) in a collective (rank \(rank): the \(what)\(phase)): the ranks are waiting in different collectives or the network stalled; the job ends"
        }
        var groups: [(host: String, ranks: [Int])] = []
        for r in missing {
            if let i = groups.firstIndex(where: { $0.host == hosts[r] }) { groups[i].ranks.append(r) } else { groups.append((hosts[r], [r])) }
        }
        let names = groups.map { g -> String in
            let ranks = (g.ranks.count == 1 ? "rank " : "ranks ") + list(g.ranks)
            // a whole node missing, in a job of several nodes: name the node
            if g.ranks.count == hosts.filter({ $0 == g.host }).count && Set(hosts).count > 1 { return "node \(g.host) (\(ranks))" }
            return ranks + " (host \(g.host))"
        }.joined(separator: ", ")
        let them = missing.count == 1 ? "it" : "them"
        return "\(names) did not arrive within \(limit): rank \(rank) waited \(seconds(waited)) s for \(them) in the \(what)\(phase); the job ends (the last saved checkpoint resumes with --resume latest)"
    }

    /// "1, 2, 3, 7" as "1-3, 7".
    static func list(_ ranks: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < ranks.count {
            var j = i
            while j + 1 < ranks.count && ranks[j + 1] == ranks[j] + 1 { j += 1 }
            parts.append(j > i + 1 ? "\(ranks[i])-\(ranks[j])" : (i...j).map { "\(ranks[$0])" }.joined(separator: ", "))
            i = j + 1
        }
        return parts.joined(separator: ", ")
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() && s < 1e15 ? "\(Int(s))" : String(format: "%.1f", s) }
}
