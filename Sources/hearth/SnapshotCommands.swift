import ArgumentParser
import Foundation
import HearthStore

/// `hearth snapshot list|create|delete`: snapshots pin a volume's root hash.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "List, create and delete snapshots.",
        subcommands: [List.self, Create.self, Delete.self, Restore.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List snapshots.")

        @OptionGroup var options: StoreOptions

        @Option(help: "Only snapshots of this volume id.")
        var volume: String?

        func run() async throws {
            let catalog = Catalog(try options.open())
            var records: [SnapshotRecord] = []
            var token: String? = nil
            repeat {
                let page = try await catalog.listSnapshots(sourceVolumeID: volume, token: token)
                records += page.records
                token = page.nextToken
            } while token != nil
            if options.json {
                try Console.printJSON(records)
                return
            }
            Console.printTable(
                ["ID", "NAME", "VOLUME", "SIZE", "GROUP", "CREATED"],
                records.map {
                    [$0.id, $0.name, $0.sourceVolumeID, Console.bytes($0.logicalBytes), $0.groupID ?? "-", Console.date($0.createdAt)]
                })
        }
    }

    /// A new volume starting at a snapshot's root: O(1), chunks shared, copy-on-write.
    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a new volume from a snapshot (O(1), copy-on-write).")

        @OptionGroup var options: StoreOptions

        @Argument(help: "Snapshot id.")
        var snapshot: String

        @Argument(help: "Name of the new volume.")
        var name: String

        @Option(help: "Capacity of the new volume, e.g. 10GiB (default: the snapshot's size, at least 1GiB).")
        var capacity: String?

        func run() async throws {
            let catalog = Catalog(try options.open())
            let source = try await catalog.snapshot(snapshot)
            let bytes = try capacity.map(Console.parseBytes) ?? max(source.logicalBytes, 1 << 30)
            guard bytes >= source.logicalBytes else {
                throw ValidationError("--capacity must hold the snapshot's \(Console.bytes(source.logicalBytes))")
            }
            let record = try await catalog.createVolume(name: name, capacityBytes: bytes, source: .snapshot(source.id))
            if options.json {
                try Console.printJSON(record)
            } else {
                print("volume \(record.id) (\(name)) from snapshot \(source.id), \(Console.bytes(bytes))")
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Snapshot a volume's last committed version.")

        @OptionGroup var options: StoreOptions

        @Argument(help: "Snapshot name (idempotent).")
        var name: String

        @Option(help: "Source volume id.")
        var volume: String

        func run() async throws {
            let record = try await Catalog(try options.open()).createSnapshot(name: name, sourceVolumeID: volume)
            if options.json {
                try Console.printJSON(record)
            } else {
                print("snapshot \(record.id) of \(record.sourceVolumeID) (\(Console.bytes(record.logicalBytes)))")
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a snapshot.")

        @OptionGroup var options: StoreOptions

        @Argument(help: "Snapshot id (snap-…).")
        var id: String

        func run() async throws {
            try await Catalog(try options.open()).deleteSnapshot(id)
            if options.json {
                try Console.printJSON(["deleted": id])
            } else {
                print("deleted \(id)")
            }
        }
    }
}
