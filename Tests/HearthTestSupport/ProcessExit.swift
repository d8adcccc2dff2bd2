import Foundation

/// Waits for `process` to exit until `deadline`; past it, SIGKILLs it and reaps it, so
/// that a process that ignores its stop signal fails its test instead of hanging the
/// run. True when it exited on its own.
@discardableResult
public func waitForExit(_ process: Process, by deadline: Date) -> Bool {
    while process.isRunning && Date() < deadline { usleep(20_000) }
    guard process.isRunning else { return true }
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    return false
}
