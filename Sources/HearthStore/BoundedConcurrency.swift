/// Runs `work` on every element, at most `limit` at a time, and hands each result
/// to `collect` as it finishes, in whatever order they finish.
///
/// Why one helper: the store's callers (collector, checker, catalog, batches) and
/// the filesystem's (uploads, takeover's manifests) each need many requests in
/// flight, but not thousands at once against one S3 endpoint or one disk. `collect`
/// runs on the calling task, one result at a time, so it may update the caller's
/// local state without locks. The first error thrown by `work` or `collect` cancels
/// the requests still running and is rethrown.
public func forEachConcurrently<Element: Sendable, Result: Sendable>(
    _ elements: [Element], limit: Int,
    _ work: @escaping @Sendable (Element) async throws -> Result,
    collect: (Result) async throws -> Void
) async throws {
    guard !elements.isEmpty else { return }
    try await withThrowingTaskGroup(of: Result.self) { group in
        var next = 0
        func launch() {
            let element = elements[next]
            next += 1
            group.addTask { try await work(element) }
        }
        while next < elements.count && next < max(1, limit) { launch() }
        while let result = try await group.next() {
            try await collect(result)
            if next < elements.count { launch() }
        }
    }
}
