import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One line of /proc/self/mountinfo.
public struct MountEntry: Sendable, Hashable {
    public var mountID: Int
    public var root: String
    public var mountPoint: String
    public var options: [String]
    public var fsType: String
    public var source: String

    public var isReadOnly: Bool { options.contains("ro") }
}

/// The kernel's mount table, read fresh on every call (mounts change under us).
public enum MountTable {
    public static func entries() -> [MountEntry] {
        guard let text = ProcFile.read("/proc/self/mountinfo") else { return [] }
        return text.split(separator: "\n").compactMap(parse)
    }

    /// The topmost mount at exactly `path` (paths compared after resolving symlinks).
    public static func mount(at path: String) -> MountEntry? {
        let wanted = canonical(path)
        return entries().last { $0.mountPoint == wanted }
    }

    public static func isMountPoint(_ path: String) -> Bool { mount(at: path) != nil }

    /// mountinfo: `id parent major:minor root mountpoint options [optional...] - fstype source superoptions`;
    /// spaces inside paths are escaped as \040.
    static func parse(_ line: Substring) -> MountEntry? {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 10, let id = Int(fields[0]), let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { return nil }
        return MountEntry(
            mountID: id, root: unescape(fields[3]), mountPoint: unescape(fields[4]),
            options: fields[5].split(separator: ",").map(String.init), fsType: String(fields[dash + 1]),
            source: unescape(fields[dash + 2]))
    }

    static func unescape(_ field: Substring) -> String {
        var out = ""
        var i = field.startIndex
        while i < field.endIndex {
            if field[i] == "\\", let end = field.index(i, offsetBy: 4, limitedBy: field.endIndex),
               let code = UInt8(field[field.index(after: i)..<end], radix: 8) {
                out.append(Character(UnicodeScalar(code)))
                i = end
            } else {
                out.append(field[i])
                i = field.index(after: i)
            }
        }
        return out
    }

    /// The path with symlinks resolved where it exists (mountinfo shows real paths).
    public static func canonical(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else {
            return URL(fileURLWithPath: path).standardizedFileURL.path
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

public struct MountError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var path: String
    public var errno: Int32
    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// Bind mounts and unmounts with mount(2) / umount2(2): what NodePublish and
/// NodeUnpublish do, without shelling out to mount(8).
public enum Mounts {
    /// Flags CSI's mount_flags may carry that map to per-mount flags.
    static let flagBits: [String: UInt] = [
        "ro": UInt(MS_RDONLY), "nosuid": UInt(MS_NOSUID), "nodev": UInt(MS_NODEV), "noexec": UInt(MS_NOEXEC),
        "noatime": UInt(MS_NOATIME), "nodiratime": UInt(MS_NODIRATIME), "relatime": UInt(MS_RELATIME),
        "sync": UInt(MS_SYNCHRONOUS), "dirsync": UInt(MS_DIRSYNC),
    ]

    /// Mount flags Hearth accepts from a volume capability.
    public static func isSupportedFlag(_ flag: String) -> Bool { flagBits[flag] != nil || flag == "rw" }

    /// Binds `source` at `target`, then applies read-only and `flags` with a
    /// remount (a bind mount ignores them on the first call).
    public static func bind(_ source: String, at target: String, readOnly: Bool, flags: [String]) throws {
        guard Glibc.mount(source, target, nil, UInt(MS_BIND), nil) == 0 else {
            throw MountError(operation: "bind mount \(source) at", path: target, errno: errno)
        }
        var bits = UInt(MS_BIND | MS_REMOUNT)
        if readOnly { bits |= UInt(MS_RDONLY) }
        for flag in flags { bits |= flagBits[flag] ?? 0 }
        if bits != UInt(MS_BIND | MS_REMOUNT) {
            guard Glibc.mount(source, target, nil, bits, nil) == 0 else {
                let saved = errno
                umount2(target, Int32(MNT_DETACH))
                throw MountError(operation: "remount with flags \(flags + (readOnly ? ["ro"] : []))", path: target, errno: saved)
            }
        }
    }

    /// Unmounts `path`; a busy mount is detached lazily rather than failing
    /// (the kernel finishes it when the last user leaves).
    public static func unmount(_ path: String) throws {
        if umount2(path, 0) == 0 { return }
        let first = errno
        if first == EINVAL || first == ENOENT { return }  // not mounted
        guard umount2(path, Int32(MNT_DETACH)) == 0 else {
            throw MountError(operation: "unmount", path: path, errno: first)
        }
    }
}
