import Foundation
import HearthStore

/// A dirty directory's entries taken at one instant under the namespace lock, to be
/// sorted, encoded and hashed after the lock is released.
///
/// Serialising a directory is the largest piece of a commit: for a 10,000-entry
/// directory the sort, the encoding and the SHA-256 took 30–230 ms on this machine,
/// and every FUSE request waited for them while they ran under the lock (a burst of
/// creates commits every 200 ms). Taking the entries is a copy of small structs;
/// everything else runs unlocked.
struct TreeSnapshot {
    var ino: UInt64
    var entries: [TreeEntry]
    /// Entries that are directories serialised by the same commit: their new tree
    /// hash is known only once they are encoded (deepest first), and patched in then.
    var pending: [(index: Int, ino: UInt64)]
}

extension VolumeFileSystem {
    /// Takes the entries of the directories in `order` (deepest first) and marks them
    /// clean (lock held). A change after this instant dirties them again for the
    /// next commit.
    func snapshotTrees(_ order: [UInt64]) -> [TreeSnapshot] {
        let serialising = Set(order)
        var snapshots: [TreeSnapshot] = []
        snapshots.reserveCapacity(order.count)
        for ino in order {
            guard let dir = nodes[ino], let children = dir.children else { continue }
            var entries: [TreeEntry] = []
            var pending: [(index: Int, ino: UInt64)] = []
            entries.reserveCapacity(children.count)
            for (name, entry) in children {
                let child = entry.ino
                guard let node = nodes[child] else { continue }
                if node.kind == .directory && serialising.contains(child) {
                    pending.append((entries.count, child))
                } else if (node.kind == .file || node.kind == .directory) && node.child == nil {
                    // Created since step 1 of this commit: not part of this version yet.
                    continue
                }
                entries.append(node.treeEntry(name: name))
            }
            dir.treeDirty = false
            snapshots.append(TreeSnapshot(ino: ino, entries: entries, pending: pending))
        }
        return snapshots
    }

    /// Encodes snapshots in order (lock not held): each directory's tree with the
    /// hashes of the subdirectories encoded before it. A subdirectory that could not
    /// be encoded keeps its previous hash, or is left out if it never had one.
    static func encodeTrees(_ snapshots: [TreeSnapshot]) -> [(ino: UInt64, hash: ContentHash, data: Data)] {
        var hashes: [UInt64: ContentHash] = [:]
        var trees: [(ino: UInt64, hash: ContentHash, data: Data)] = []
        for snapshot in snapshots {
            var entries = snapshot.entries
            var dropped: [Int] = []
            for (index, ino) in snapshot.pending {
                if let hash = hashes[ino] {
                    entries[index].child = hash
                } else if entries[index].child == nil {
                    dropped.append(index)
                }
            }
            for index in dropped.sorted(by: >) { entries.remove(at: index) }
            guard let tree = try? Tree(entries: entries) else { continue }
            let data = tree.encoded()
            let hash = ContentHash.of(data)
            hashes[snapshot.ino] = hash
            trees.append((snapshot.ino, hash, data))
        }
        return trees
    }
}
