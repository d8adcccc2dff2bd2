import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How the cache shares the process's file-descriptor table (RLIMIT_NOFILE).
///
/// A working copy stays open from a file's first write until the commit after its
/// close retires it, so a burst of new files (untar, a build, a metadata benchmark)
/// holds one descriptor per file written since the last commit. Under a soft limit of
/// 1,024 (systemd's default, and many shells') 10,000 quick creates ran the table out
/// and the application's writes failed with EMFILE. The budget keeps working copies
/// below the limit with room to spare for what the commit that retires them opens
/// itself (store temp files, the journal, /dev/fuse clones): past it, a new working
/// copy waits for that commit instead of failing.
public struct DescriptorBudget: Sendable, Equatable {
    /// Working copies open at once, at most.
    public let workingCopies: Int
    /// From this many working copies on, a close asks for its commit at once rather
    /// than at the end of the coalescing window, so the burst seldom has to wait.
    public let commitEarly: Int
    /// Emptied working copies kept open for reuse (``SpareWorkingCopies``).
    public let openSpares: Int

    public init(softLimit: Int) {
        openSpares = min(256, softLimit / 8)
        let reserve = max(64, softLimit / 8)
        workingCopies = max(16, softLimit - openSpares - reserve)
        commitEarly = workingCopies / 2
    }

    /// RLIM_INFINITY (all ones), which Swift cannot import from its macro.
    private static let unlimited = rlim_t.max

    /// The budget for this process's soft limit now.
    public static var current: DescriptorBudget { DescriptorBudget(softLimit: softLimit()) }

    /// The soft RLIMIT_NOFILE in force (an unlimited one counts as 1 << 20).
    public static func softLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return limit.rlim_cur == Self.unlimited ? 1 << 20 : Int(clamping: limit.rlim_cur)
    }

    /// Raises the soft limit to the hard one and returns the soft limit then in force.
    ///
    /// The low soft default exists for programs that use select(2), which cannot see
    /// descriptors above 1,023; Hearth uses poll and epoll only, and each daemon needs
    /// a descriptor per file being written. The hard limit is the administrator's
    /// (a pod's is usually 1,048,576) and is left as it is.
    @discardableResult
    public static func raiseSoftLimit() -> Int {
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) != 0, limit.rlim_max == Self.unlimited {
                // An unlimited hard limit still stops at fs.nr_open.
                if let text = try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8),
                   let nrOpen = rlim_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                    raised.rlim_cur = nrOpen
                    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised)
                }
            }
        }
        return softLimit()
    }
}
