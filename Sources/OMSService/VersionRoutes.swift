import Foundation
import Hummingbird
import OMSContract
import ProdReadyCore
import ProdReadyS3
import ProdReadyService

/// Branches, history and diffs (SPEC-oms "Branches and versions"), all derived from the event store: a branch is
/// a named position in a database's event log, kept as a create-only object `branches/<db>/<name>.json`.
extension OMSAPI {
    struct BranchCreate: Decodable {
        var branchName: String
        var fromBranch: String?
        enum CodingKeys: String, CodingKey {
            case branchName = "branch_name", fromBranch = "from_branch"
        }
    }

    struct Branch: Codable {
        var name: String
        var head: Int64
        var fromBranch: String?
        var createdAt: String
        enum CodingKeys: String, CodingKey {
            case name, head, fromBranch = "from_branch", createdAt = "created_at"
        }
        var json: JSONValue {
            ["name": .string(name), "head": .int(Int(head)), "from_branch": fromBranch.map { .string($0) } ?? .null, "created_at": .string(createdAt)]
        }
    }

    static func addVersionRoutes(to router: ServiceRouter, _ deps: OMSAPIDependencies) {
        router.add(.get, "/api/v1/branch/{db}/list", summary: "The database's branches (always main)", role: reader, responses: [200: "branches", 404: "unknown database"]) { _, context in
            let database = try await ownedDatabase(context, deps)
            var branches = [try await mainBranch(database, deps).json]
            for key in try await dependency("s3", { try await deps.store.s3.listKeys(bucket: deps.store.bucket, prefix: "branches/\(database)/") }) {
                branches.append(try await readBranch(key: key, deps).json)
            }
            return Response.json(["status": "success", "data": ["branches": .array(branches)]])
        }

        router.add(.post, "/api/v1/branch/{db}/create", summary: "Name the current position of a branch", role: writer,
                   body: ["type": "object", "required": ["branch_name"], "properties": ["branch_name": ["type": "string"], "from_branch": ["type": "string"]]],
                   responses: [201: "created", 404: "unknown database or from_branch", 409: "the branch exists"]) { request, context in
            let database = try await ownedDatabase(context, deps)
            let body = try await request.decodeJSON(BranchCreate.self, context: context)
            guard body.branchName.range(of: "^[a-z0-9][a-z0-9_-]{0,62}$", options: .regularExpression) != nil, body.branchName != "main" else {
                throw ServiceError.badRequest("invalid_field", "a branch name must match [a-z0-9][a-z0-9_-]{0,62} and not be main", extra: ["field": "branch_name"])
            }
            let source = try await branch(database, body.fromBranch ?? "main", deps)
            let created = Branch(name: body.branchName, head: source.head, fromBranch: source.name, createdAt: OMSEvent.timestamp(Date()))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            do {
                _ = try await dependency("s3") {
                    try await deps.store.s3.putObject(bucket: deps.store.bucket, key: branchKey(database, created.name), body: Array(try encoder.encode(created)), condition: .ifAbsent, contentType: "application/json")
                }
            } catch let error as ServiceError where error.status == .conflict {
                throw ServiceError.conflict("branch_exists", "the branch '\(created.name)' exists")
            }
            if let audit = deps.writeModel.auditTrail, let caller = context.identity {
                await audit.recordOutsideCommand(
                    OMSAuditTrail.branchCreated(caller, database: database, branch: created.name, fromBranch: source.name, head: source.head, requestID: context.requestID),
                    id: OMSAuditTrail.branchEventID(database: database, branch: created.name), requestID: context.requestID)
            }
            return Response.json(["status": "success", "data": created.json], status: .created)
        }

        router.add(.get, "/api/v1/branch/{db}/branch/{branch}/info", summary: "A branch's head sequence", role: reader, responses: [200: "the branch", 404: "unknown branch"]) { _, context in
            let database = try await ownedDatabase(context, deps)
            return Response.json(["status": "success", "data": try await branch(database, context.parameter("branch"), deps).json])
        }

        router.add(.get, "/api/v1/version/{db}/history", summary: "The database's commands, newest first", role: reader,
                   query: [QueryParameter("limit", ["type": "integer", "minimum": 1, "maximum": 1000], summary: "at most this many (default 100)")],
                   responses: [200: "commands", 404: "unknown database"]) { request, context in
            let database = try await ownedDatabase(context, deps)
            let limit = try request.integerQuery("limit", range: 1...1000) ?? 100
            let keys = try await dependency("s3") { try await deps.store.s3.listKeys(bucket: deps.store.bucket, prefix: OMSEventStore.eventPrefix(database: database)) }
            var commands: [OMSEvent] = []
            var end = keys.count
            // From the newest key backwards, a chunk at a time, until `limit` commands are found.
            while end > 0 && commands.count < limit {
                let start = max(0, end - max(limit * 2, 32))
                let events = try await readEvents(Array(keys[start..<end]), deps)
                commands = events.filter { $0.kind == .command } + commands
                end = start
            }
            let newestFirst = commands.sorted { $0.sequence > $1.sequence }.prefix(limit)
            let entries: [JSONValue] = newestFirst.map {
                ["sequence": .int(Int($0.sequence)), "type": .string($0.eventType), "actor": .string($0.actor), "time": .string(OMSEvent.timestamp($0.occurredAt)),
                 "command_id": .string($0.commandID), "aggregate_id": .string($0.aggregateID)]
            }
            return Response.json(["status": "success", "data": ["commands": .array(entries)]])
        }

        router.add(.get, "/api/v1/version/{db}/diff", summary: "Instances added, changed and removed between two refs (a branch or @<sequence>)", role: reader,
                   query: [QueryParameter("from_ref", ["type": "string"], required: true, summary: "a branch name or @<sequence>"), QueryParameter("to_ref", ["type": "string"], required: true, summary: "a branch name or @<sequence>")],
                   responses: [200: "the diff", 404: "unknown database or ref"]) { request, context in
            let database = try await ownedDatabase(context, deps)
            guard let fromRef = request.uri.queryParameters["from_ref"].map(String.init), let toRef = request.uri.queryParameters["to_ref"].map(String.init) else {
                throw ServiceError.badRequest("missing_parameter", "from_ref and to_ref are required (a branch name or @<sequence>)", extra: ["field": "from_ref"])
            }
            let from = try await position(database, fromRef, deps)
            let to = try await position(database, toRef, deps)
            let keys = try await dependency("s3") { try await deps.store.s3.listKeys(bucket: deps.store.bucket, prefix: OMSEventStore.eventPrefix(database: database)) }
            let needed = keys.filter { (OMSEventStore.sequence(ofKey: $0) ?? .max) <= max(from, to) }
            let domain = try await readEvents(needed, deps).filter { $0.kind == .domain }
            let before = state(domain, upTo: from)
            let after = state(domain, upTo: to)
            func entry(_ key: String, _ data: JSONValue?) -> JSONValue {
                let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
                return ["class": .string(parts[0]), "id": .string(parts.count > 1 ? parts[1] : ""), "data": data ?? .null]
            }
            let added = after.keys.filter { before[$0] == nil }.sorted().map { entry($0, after[$0]) }
            let removed = before.keys.filter { after[$0] == nil }.sorted().map { entry($0, before[$0]) }
            let changed = after.keys.filter { before[$0] != nil && before[$0] != after[$0] }.sorted().map { key -> JSONValue in
                let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
                return ["class": .string(parts[0]), "id": .string(parts.count > 1 ? parts[1] : ""), "from": before[key] ?? .null, "to": after[key] ?? .null]
            }
            return Response.json(["status": "success", "data": [
                "from_ref": .string(fromRef), "to_ref": .string(toRef), "from_sequence": .int(Int(from)), "to_sequence": .int(Int(to)),
                "added": .array(added), "changed": .array(changed), "removed": .array(removed),
            ]])
        }
    }

    static func branchKey(_ database: String, _ name: String) -> String { "branches/\(database)/\(name).json" }

    /// main: the database's current head (the last sequence its event log reserved).
    static func mainBranch(_ database: String, _ deps: OMSAPIDependencies) async throws -> Branch {
        let head = try await dependency("postgres") { try await deps.writeModel.eventLogHead(database, handler: deps.store.allocator.handler) }
        return Branch(name: "main", head: head, fromBranch: nil, createdAt: "")
    }

    static func branch(_ database: String, _ name: String, _ deps: OMSAPIDependencies) async throws -> Branch {
        if name == "main" { return try await mainBranch(database, deps) }
        guard name.range(of: "^[a-z0-9][a-z0-9_-]{0,62}$", options: .regularExpression) != nil else { throw ServiceError(.notFound, "branch_not_found", "no branch '\(name)'") }
        do {
            return try await readBranch(key: branchKey(database, name), deps)
        } catch let error as ServiceError where error.status == .notFound {
            throw ServiceError(.notFound, "branch_not_found", "no branch '\(name)'")
        }
    }

    static func readBranch(key: String, _ deps: OMSAPIDependencies) async throws -> Branch {
        let object = try await dependency("s3") { try await deps.store.s3.getObject(bucket: deps.store.bucket, key: key) }
        return try JSONDecoder().decode(Branch.self, from: Data(object.body))
    }

    /// A ref's sequence: a branch's head, or `@<sequence>`.
    static func position(_ database: String, _ ref: String, _ deps: OMSAPIDependencies) async throws -> Int64 {
        if ref.hasPrefix("@") {
            guard let sequence = Int64(ref.dropFirst()), sequence >= 0 else {
                throw ServiceError.badRequest("invalid_parameter", "a ref is a branch name or @<sequence>, got '\(ref)'", extra: ["field": "ref"])
            }
            return sequence
        }
        return try await branch(database, ref, deps).head
    }

    static func readEvents(_ keys: [String], _ deps: OMSAPIDependencies) async throws -> [OMSEvent] {
        var events: [OMSEvent] = []
        for start in stride(from: 0, to: keys.count, by: 32) {
            let chunk = Array(keys[start..<min(start + 32, keys.count)])
            events += try await dependency("s3") {
                try await withThrowingTaskGroup(of: (Int, OMSEvent).self) { group in
                    for (index, key) in chunk.enumerated() { group.addTask { (index, try await deps.store.read(key: key)) } }
                    var read = [OMSEvent?](repeating: nil, count: chunk.count)
                    for try await (index, event) in group { read[index] = event }
                    return read.compactMap { $0 }
                }
            }
        }
        return events
    }

    /// Live instances (`class/id` → data) after replaying domain events up to `sequence`.
    static func state(_ events: [OMSEvent], upTo sequence: Int64) -> [String: JSONValue] {
        var instances: [String: JSONValue] = [:]
        for event in events.sorted(by: { $0.sequence < $1.sequence }) where event.sequence <= sequence {
            guard let classID = event.payload["class"]?.stringValue, let id = event.payload["instance_id"]?.stringValue else { continue }
            let key = "\(classID)/\(id)"
            if event.payload["deleted"]?.boolValue == true { instances[key] = nil } else { instances[key] = event.payload["data"] ?? .null }
        }
        return instances
    }
}
