import Foundation
import HearthCache
import HearthFUSE
import HearthStore

#if canImport(Glibc)
import Glibc
#endif

/// What a takeover restored, for the log and tests.
public struct RestoreSummary: Sendable {
    public var records = 0
    public var nodes = 0
    public var handles = 0
    public var workingCopies = 0
}

extension VolumeFileSystem {
    /// Starts journaling to `path` (see ``Journal``): every node id the kernel learns,
    /// every namespace change and every open handle from now on. Call before serving.
    public func startJournal(at path: String) throws {
        let log = try Journal(path: path)
        lock.withLock { journalLog = log }
    }

    /// Rebuilds the dead daemon's state from its journal at `path`, over the volume's
    /// current head: nodes the kernel references (so their ids resolve), the
    /// namespace changes not yet committed, working copies with their bytes (all their
    /// present chunks dirty again: the commit hashes them and uploads only changes),
    /// and open handles (passthrough ones keep their backing ids, which belong to the
    /// connection and outlived the daemon). Runs before the first request is served,
    /// on a plain thread (it may fetch trees and manifests from the store).
    public func restore(journalAt path: String) throws -> RestoreSummary {
        let records = Journal.read(path)
        var summary = RestoreSummary()
        summary.records = records.count
        // Where each node was last seen: how to find a node the head has not loaded.
        var locations: [UInt64: (parent: UInt64, name: String)] = [:]
        var workPaths: [UInt64: String] = [:]
        var handles: [UInt64: JournalRecord] = [:]
        var touched = Set<UInt64>()
        var replayedFiles = Set<UInt64>()

        /// Brings `ino` into memory by loading the directories on its path.
        func resolve(_ ino: UInt64, depth: Int = 0) -> Inode? {
            if let node = lock.withLock({ nodes[ino] }) { return node }
            guard depth < 4096, let parent = locations[ino]?.parent, parent != ino,
                  resolve(parent, depth: depth + 1) != nil else { return nil }
            _ = try? withDirectory(parent) { _ in }
            return lock.withLock { nodes[ino] }
        }

        for record in records {
            switch record.op {
            case .entry:
                guard let parent = record.parent, let name = record.name, let ino = record.ino,
                      resolve(parent) != nil else { continue }
                _ = resolve(ino)
                try? withDirectory(parent) { dir in
                    let previous = dir.children?[name]?.ino
                    guard previous != ino, let node = nodes[ino] else { return }
                    if let previous, let old = nodes[previous], let i = old.parents.firstIndex(of: parent) {
                        old.parents.remove(at: i)
                    }
                    dir.children?[name] = node.asChild
                    if !node.parents.contains(parent) { node.parents.append(parent) }
                    markTreeDirty(parent)
                }
                locations[ino] = (parent, name)
                touched.insert(ino)
            case .unlink:
                guard let parent = record.parent, let name = record.name, resolve(parent) != nil else { continue }
                try? withDirectory(parent) { dir in
                    guard let ino = dir.children?[name]?.ino else { return }
                    dir.children?[name] = nil
                    if let node = nodes[ino], let i = node.parents.firstIndex(of: parent) { node.parents.remove(at: i) }
                    markTreeDirty(parent)
                }
            case .node:
                guard let ino = record.ino, let attrs = record.attrs, let kind = EntryKind(rawValue: attrs.kind) else { continue }
                var node = resolve(ino)
                if node == nil, let parent = record.parent, resolve(parent) != nil {
                    _ = try? withDirectory(parent) { _ in }
                    node = lock.withLock { nodes[ino] }
                }
                lock.withLock {
                    let target: Inode
                    if let node {
                        target = node
                    } else {
                        // Created since the last commit: not in the head.
                        let entry = TreeEntry(name: "new", kind: kind, mode: attrs.mode, uid: attrs.uid, gid: attrs.gid,
                                              rdev: attrs.rdev, size: attrs.size, atimeNs: attrs.atimeNs, mtimeNs: attrs.mtimeNs,
                                              ctimeNs: attrs.ctimeNs, symlinkTarget: attrs.symlinkTarget)
                        target = Inode(ino: ino, entry: entry, parent: record.parent ?? 1)
                        target.parents = []
                        target.child = nil
                        target.committedSize = 0
                        if kind == .directory { target.children = [:] }
                        nodes[ino] = target
                    }
                    if target.kind == .file, target.nlink > 0 { usedBytes += attrs.size - target.size }
                    target.mode = attrs.mode
                    target.uid = attrs.uid
                    target.gid = attrs.gid
                    target.size = attrs.size
                    target.atimeNs = attrs.atimeNs
                    target.mtimeNs = attrs.mtimeNs
                    target.ctimeNs = attrs.ctimeNs
                    target.nlink = attrs.nlink
                    if kind == .symlink { target.symlinkTarget = attrs.symlinkTarget }
                    if kind == .directory { markTreeDirty(ino) } else if target.nlink > 0 { markFileDirty(target) }
                }
                workPaths[ino] = attrs.workingCopy
                if kind == .file { replayedFiles.insert(ino) }
                touched.insert(ino)
            case .open:
                if let fh = record.fh { handles[fh] = record }
            case .close:
                if let fh = record.fh { handles[fh] = nil }
            }
        }

        // Files the replay marked dirty: the commit that follows builds each one's
        // manifest on its committed chunks, so it needs them loaded whether or not
        // there is a working copy (without, it would commit zeros). Working
        // copies hold the bytes written since the last commit.
        // Each committed manifest is loaded once, all in one trip to the store (a
        // burst of small files journals thousands of files, often with one manifest).
        var needed: [(node: Inode, path: String?, hash: ContentHash?)] = []
        lock.withLock {
            for ino in replayedFiles {
                guard let node = nodes[ino], node.kind == .file else { continue }
                let path = workPaths[ino]
                // Without a working copy, a manifest already loaded is the committed one.
                needed.append((node, path, path == nil && node.manifest != nil ? nil : node.child))
            }
        }
        let manifests = try loadManifests(Set(needed.compactMap(\.hash)))
        for (node, path, hash) in needed {
            let manifest = hash.flatMap { manifests[$0] }
            guard let path else {
                if let manifest { lock.withLock { node.manifest = manifest } }
                continue
            }
            let committedSize = lock.withLock { node.committedSize }
            guard let work = cache.reopenWorkingCopy(path: path, chunkSize: manifest?.chunkSize ?? config.chunkSize,
                                                     committedSize: manifest == nil ? 0 : committedSize) else {
                // Retired after a commit that holds its bytes: the head's size is the
                // truth, not the one journaled when the copy was made (writes that
                // extend a dirty file are not journaled).
                lock.withLock {
                    if node.nlink > 0 { usedBytes += committedSize - node.size }
                    node.size = committedSize
                    node.manifest = manifest
                }
                continue
            }
            for index in work.chunks(covering: 0..<work.size) where work.isPresent(index) { work.markDirty(index..<index + 1) }
            lock.withLock {
                node.manifest = manifest
                node.work = work
                if node.nlink > 0 { usedBytes += work.size - node.size }
                node.size = work.size
                if node.nlink > 0 { markFileDirty(node) }
            }
            summary.workingCopies += 1
        }
        // The dead daemon's spares go in the background: up to thousands of
        // unlinks, which the first request after the kill need not wait for.
        let cache = self.cache, volume = config.volumeID, adopted = Set(workPaths.values)
        DispatchQueue.global(qos: .utility).async {
            cache.removeLeftoverSpares(volume: volume, adopted: adopted)
        }

        // Open handles, and the kernel's references: the dead daemon's lookup counts
        // are unknown, so every node the journal named stays in memory (FORGETs only
        // count down; a node is dropped once unlinked and forgotten or never).
        lock.withLock {
            for ino in touched { nodes[ino]?.lookups += 1 << 40 }
            summary.nodes = touched.count
            var highest: UInt64 = 0
            for (fh, record) in handles {
                guard let ino = record.ino, let node = nodes[ino] else { continue }
                highest = max(highest, fh)
                let mode = OpenMode(journalCode: record.handleMode ?? 0)
                let writing = record.writing ?? true
                fileHandles[fh] = FileHandle(ino: ino, mode: mode, writing: writing)
                node.opens += 1
                switch mode {
                case .cached:
                    node.cachedOpens += 1
                case .passthrough, .passthroughDirect:
                    restorePassthrough(node, id: record.backing ?? 0)
                }
                summary.handles += 1
            }
            // Handles the dead daemon issued (directory handles are not journaled)
            // must never be reissued: leave a wide gap.
            nextHandle = max(nextHandle, highest + 1) + (1 << 32)
            restoredSession = true
        }
        return summary
    }

    /// Re-attaches a passthrough open of `node` whose backing id the kernel still
    /// holds (lock held): the working copy if the file has one, else its clean copy.
    /// The manifests named `hashes`, read 8 at a time; any failure fails the restore.
    private func loadManifests(_ hashes: Set<ContentHash>) throws -> [ContentHash: Manifest] {
        guard !hashes.isEmpty else { return [:] }
        let content = self.content, wanted = Array(hashes)
        do {
            return try blocking {
                var loaded: [ContentHash: Manifest] = [:]
                try await forEachConcurrently(wanted, limit: 8, { hash in (hash, try await content.manifest(hash)) },
                                              collect: { hash, manifest in loaded[hash] = manifest })
                return loaded
            }
        } catch {
            throw fuseError(error)
        }
    }

    private func restorePassthrough(_ node: Inode, id: Int32) {
        if var state = node.passthrough {
            state.opens += 1
            node.passthrough = state
            return
        }
        let file: CacheFile?
        if let work = node.work {
            file = work
        } else if let hash = node.child, let manifest = node.manifest ?? (try? blocking({ [content] in try await content.manifest(hash) })) {
            node.manifest = manifest
            if node.clean == nil { node.clean = try? cache.openClean(hash, manifest: manifest) }
            file = node.clean
        } else {
            file = nil
        }
        guard let file else { return }
        cache.retain(file)
        var st = stat()
        fstat(file.fd, &st)
        let writable = file === node.work
        node.passthrough = PassthroughState(id: id, file: file, writable: writable, opens: 1, seenSize: Int64(st.st_size),
                                            seenMtimeNs: 0)
        if writable { passthroughWriters.insert(node.ino) }
    }
}
