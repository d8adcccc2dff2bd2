import ArgumentParser
import Foundation
import HearthStore

/// `hearth volume create|list|delete`: volumes without Kubernetes, on the same
/// records the CSI controller uses (so a volume made here is a CSI volume too).
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume",
        abstract: "Create, list and delete volumes in the store.",
        subcommands: [Create.self, List.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a volume (idempotent by name).")

        @OptionGroup var options: StoreOptions

        @Argument(help: "Volume name; creating an existing name with the same capacity returns it.")
        var name: String

        @Option(help: "Capacity quota, e.g. 10GiB, 500Mi.")
        var capacity: String = "10GiB"

        @Option(help: "Start from a snapshot id (copy-on-write; nothing is copied).")
        var fromSnapshot: String?

        func run() async throws {
            let catalog = Catalog(try options.open())
            let record = try await catalog.createVolume(
                name: name, capacityBytes: try Console.parseBytes(capacity),
                source: fromSnapshot.map { .snapshot($0) })
            if options.json {
                try Console.printJSON(record)
            } else {
                print("volume \(record.id) (\(record.name), \(Console.bytes(record.capacityBytes)))")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List volumes with their current size and version.")

        @OptionGroup var options: StoreOptions

        func run() async throws {
            let catalog = Catalog(try options.open())
            var records: [VolumeRecord] = []
            var token: String? = nil
            repeat {
                let page = try await catalog.listVolumes(token: token)
                records += page.records
                token = page.nextToken
            } while token != nil
            var heads: [String: VolumeHead] = [:]
            for record in records {
                heads[record.id] = try? await catalog.heads.read(record.id).head
            }
            if options.json {
                struct Row: Encodable {
                    var volume: VolumeRecord
                    var head: VolumeHead?
                }
                try Console.printJSON(records.map { Row(volume: $0, head: heads[$0.id]) })
                return
            }
            Console.printTable(
                ["ID", "NAME", "CAPACITY", "USED", "GENERATION", "CREATED"],
                records.map { record in
                    let head = heads[record.id]
                    return [record.id, record.name, Console.bytes(record.capacityBytes),
                            head.map { Console.bytes($0.logicalBytes) } ?? "-",
                            head.map { String($0.generation) } ?? "-", Console.date(record.createdAt)]
                })
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a volume (its data is reclaimed by `hearth store gc` unless a snapshot holds it).")

        @OptionGroup var options: StoreOptions

        @Argument(help: "Volume id (vol-…).")
        var id: String

        func run() async throws {
            try await Catalog(try options.open()).deleteVolume(id)
            if options.json {
                try Console.printJSON(["deleted": id])
            } else {
                print("deleted \(id)")
            }
        }
    }
}
