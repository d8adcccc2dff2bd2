import Foundation
import HearthFUSE
import HearthMounts

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's side of issue 8's crash recovery: where its session state lives, and
/// the hand-off of its /dev/fuse fd to the node plugin's fd keeper.
///
/// `<cache dir>/sessions/<volume>/` holds `session.json` (the INIT parameters, which a
/// successor cannot ask the kernel for again) and `journal.log` (see HearthFS's
/// `Journal`). Both are on the node's local disk next to the working copies they
/// refer to.
struct TakeoverState {
    let directory: String
    var parametersPath: String { directory + "/session.json" }
    var journalPath: String { directory + "/journal.log" }

    init(cacheDirectory: String, volumeID: String) {
        directory = cacheDirectory + "/sessions/" + volumeID
    }

    /// A fresh mount: whatever an earlier session left is void.
    func reset() throws {
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func loadParameters() throws -> SessionParameters {
        guard let data = FileManager.default.contents(atPath: parametersPath) else {
            throw FDHandoff.Failure(description: "no saved session parameters at \(parametersPath)")
        }
        return try JSONDecoder().decode(SessionParameters.self, from: data)
    }

    /// Once INIT is answered: saves the parameters, then hands the fd to the keeper.
    /// In that order, so that a keeper holding an fd always means a successor can
    /// restore the session; a daemon killed before the hand-off is simply started
    /// afresh (its mount is dead, and cleared).
    func handOff(session: FuseSession, fd: Int32, keeperSocket: String) {
        let thread = Thread {
            nameCurrentThread("fd-handoff")
            let giveUp = Date().addingTimeInterval(60)
            while session.parameters == nil {
                if Date() > giveUp {
                    MountCommand.log("no INIT within 60 s: fd not handed to the keeper")
                    return
                }
                usleep(1000)
            }
            do {
                let data = try JSONEncoder().encode(session.parameters!)
                let temporary = parametersPath + ".tmp"
                try data.write(to: URL(fileURLWithPath: temporary))
                guard rename(temporary, parametersPath) == 0 else {
                    throw FDHandoff.Failure(description: "rename \(temporary): \(String(cString: strerror(errno)))")
                }
                try FDHandoff.put(fd, to: keeperSocket)
            } catch {
                MountCommand.log("cannot hand the session to the fd keeper (a crash will remount): \(error)")
            }
        }
        thread.start()
    }
}
