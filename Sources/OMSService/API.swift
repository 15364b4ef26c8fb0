import Foundation
import Hummingbird
import HTTPTypes
public import Logging
import OMSContract
public import PostgresNIO
public import ProdReadyCore
import ProdReadyPostgres
public import ProdReadyReliability
public import ProdReadyService

/// Everything the `oms` process's routes use.
public struct OMSAPIDependencies: Sendable {
    public var store: OMSEventStore
    public var writeModel: OMSWriteModel
    public var readStore: OMSReadStore
    /// Per-aggregate versions (optimistic concurrency) of databases, classes and instances.
    public var aggregates: SequenceAllocator
    public var logger: Logger

    public init(store: OMSEventStore, writeModel: OMSWriteModel, readStore: OMSReadStore, aggregates: SequenceAllocator, logger: Logger) {
        self.store = store
        self.writeModel = writeModel
        self.readStore = readStore
        self.aggregates = aggregates
        self.logger = logger
    }

    public static let aggregateType = "oms"
}

/// The OMS's HTTP API (SPEC-oms "HTTP API"): commands are validated, sequenced, appended to the event store and
/// answered 202; reads come from the write model (Postgres), command status and documents from Redis.
public enum OMSAPI {
    static let reader = ServiceRole.reader
    static let writer = ServiceRole.writer
    static let expectedSeq = QueryParameter("expected_seq", ["type": "integer", "minimum": 0], required: true, summary: "the version the caller last read")

    struct DatabaseCreate: Decodable {
        var name: String
        var description: String?
    }
    struct OntologyCreate: Decodable {
        var id: String
        var label: String?
        var properties: [OMSProperty]?
    }
    struct InstanceWrite: Decodable {
        var data: [String: JSONValue]
        var instanceID: String?
        enum CodingKeys: String, CodingKey {
            case data, instanceID = "instance_id"
        }
    }

    public static func addRoutes(to router: ServiceRouter, _ deps: OMSAPIDependencies) {
        addVersionRoutes(to: router, deps)
        router.add(.post, "/api/v1/database/create", summary: "Create a database (async)", role: writer,
                   body: ["type": "object", "required": ["name"], "properties": ["name": ["type": "string", "pattern": "^[a-z][a-z0-9_-]{2,62}$"], "description": ["type": "string", "maxLength": 1000]]],
                   responses: [202: "accepted", 409: "the name is taken"]) { request, context in
            let body = try await request.decodeJSON(DatabaseCreate.self, context: context)
            guard OMSNames.validDatabase(body.name) else {
                throw ServiceError.badRequest("invalid_field", "the database name must match [a-z][a-z0-9_-]{2,62}", extra: ["field": "name"])
            }
            let description = body.description ?? ""
            guard description.count <= 1000 else { throw ServiceError.badRequest("invalid_field", "the description is longer than 1000 characters", extra: ["field": "description"]) }
            return try await accept(request, context, deps, type: .createDatabase, database: body.name, aggregateID: OMSNames.databaseAggregate(body.name),
                                    expected: nil, payload: ["name": .string(body.name), "description": .string(description)])
        }

        router.add(.get, "/api/v1/database/exists/{db}", summary: "Whether a database exists (applied)", role: reader, responses: [200: "exists or not"]) { _, context in
            let database = context.parameter("db")
            let caller = try context.caller()
            let row = try await dependency("postgres") { try await deps.writeModel.database(database) }
            let exists = row.map { !$0.deleted && $0.tenant == caller.tenant } ?? false
            return Response.json(["status": "success", "data": ["exists": .bool(exists)]])
        }

        router.add(.delete, "/api/v1/database/{db}", summary: "Delete a database (async)", role: writer, query: [expectedSeq], responses: [202: "accepted", 404: "unknown database", 409: "stale expected_seq"]) { request, context in
            let database = try await ownedDatabase(context, deps)
            let expected = try requiredExpectedSeq(request)
            return try await accept(request, context, deps, type: .deleteDatabase, database: database, aggregateID: OMSNames.databaseAggregate(database),
                                    expected: expected, payload: ["name": .string(database), "expected_seq": .int(Int(expected))])
        }

        router.add(.post, "/api/v1/database/{db}/ontology", summary: "Define a class (async)", role: writer,
                   body: ["type": "object", "required": ["id"], "properties": ["id": ["type": "string"], "label": ["type": "string"], "properties": ["type": "array"]]],
                   responses: [202: "accepted", 404: "unknown database", 409: "the class exists"]) { request, context in
            let database = try await ownedDatabase(context, deps)
            let body = try await request.decodeJSON(OntologyCreate.self, context: context)
            let properties = body.properties ?? []
            do {
                try OMSValidation.validateOntology(id: body.id, label: body.label ?? body.id, properties: properties)
            } catch let error as OMSValidationError {
                throw ServiceError.badRequest("invalid_field", error.message, extra: ["field": .string(error.field)])
            }
            return try await accept(request, context, deps, type: .createOntology, database: database, aggregateID: OMSNames.classAggregate(database, body.id),
                                    expected: nil, payload: ["id": .string(body.id), "label": .string(body.label ?? body.id), "properties": .array(properties.map(\.json))])
        }

        router.add(.get, "/api/v1/database/{db}/ontology", summary: "The database's classes", role: reader, responses: [200: "classes", 404: "unknown database"]) { _, context in
            let database = try await ownedDatabase(context, deps)
            let classes = try await dependency("postgres") { try await deps.writeModel.classes(of: database) }
            let ontologies: [JSONValue] = classes.map { ["id": .string($0.id), "label": .string($0.label), "properties": .array($0.properties.map(\.json))] }
            return Response.json(["status": "success", "data": ["ontologies": .array(ontologies)]])
        }

        router.add(.post, "/api/v1/instances/{db}/async/{class}/create", summary: "Create an instance (async)", role: writer,
                   body: ["type": "object", "required": ["data"], "properties": ["data": ["type": "object"], "instance_id": ["type": "string"]]],
                   responses: [202: "accepted", 404: "unknown database or class", 409: "the instance exists"]) { request, context in
            let (database, classRow) = try await ownedClass(context, deps)
            let body = try await request.decodeJSON(InstanceWrite.self, context: context)
            try validate(body.data, classRow)
            // A retry with the same idempotency key must name the same instance, so the id derives from the key.
            let instanceID = try body.instanceID ?? request.idempotencyKey().map { UUIDv5.make(name: "oms-instance:\($0)") } ?? UUID().uuidString.lowercased()
            guard OMSNames.validInstance(instanceID) else {
                throw ServiceError.badRequest("invalid_field", "the instance id must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127}", extra: ["field": "instance_id"])
            }
            return try await accept(request, context, deps, type: .createInstance, database: database, aggregateID: OMSNames.instanceAggregate(database, classRow.id, instanceID),
                                    expected: nil, payload: ["class": .string(classRow.id), "instance_id": .string(instanceID), "data": .object(body.data)], instanceID: instanceID)
        }

        router.add(.put, "/api/v1/instances/{db}/async/{class}/{id}/update", summary: "Update an instance (async)", role: writer, query: [expectedSeq],
                   body: ["type": "object", "required": ["data"], "properties": ["data": ["type": "object"]]],
                   responses: [202: "accepted", 404: "unknown instance", 409: "stale expected_seq"]) { request, context in
            let (database, classRow) = try await ownedClass(context, deps)
            let instanceID = context.parameter("id")
            let expected = try requiredExpectedSeq(request)
            let body = try await request.decodeJSON(InstanceWrite.self, context: context)
            try validate(body.data, classRow)
            return try await accept(request, context, deps, type: .updateInstance, database: database, aggregateID: OMSNames.instanceAggregate(database, classRow.id, instanceID),
                                    expected: expected, payload: ["class": .string(classRow.id), "instance_id": .string(instanceID), "data": .object(body.data), "expected_seq": .int(Int(expected))], instanceID: instanceID)
        }

        router.add(.delete, "/api/v1/instances/{db}/async/{class}/{id}/delete", summary: "Delete an instance (async)", role: writer, query: [expectedSeq],
                   responses: [202: "accepted", 404: "unknown instance", 409: "stale expected_seq"]) { request, context in
            let (database, classRow) = try await ownedClass(context, deps)
            let instanceID = context.parameter("id")
            let expected = try requiredExpectedSeq(request)
            return try await accept(request, context, deps, type: .deleteInstance, database: database, aggregateID: OMSNames.instanceAggregate(database, classRow.id, instanceID),
                                    expected: expected, payload: ["class": .string(classRow.id), "instance_id": .string(instanceID), "expected_seq": .int(Int(expected))], instanceID: instanceID)
        }

        router.add(.get, "/api/v1/instance/{db}/class/{class}/count", summary: "How many live instances a class has (write model)", role: reader, responses: [200: "the count", 404: "unknown database"]) { _, context in
            let database = try await ownedDatabase(context, deps)
            let classID = context.parameter("class")
            let count = try await dependency("postgres") { try await deps.writeModel.count(database, classID) }
            return Response.json(["status": "success", "data": ["count": .int(count)]])
        }

        router.add(.get, "/api/v1/instance/{db}/class/{class}/{id}", summary: "One instance with its version", role: reader, responses: [200: "the instance", 404: "unknown instance"]) { _, context in
            let database = try await ownedDatabase(context, deps)
            let classID = context.parameter("class")
            let id = context.parameter("id")
            guard let row = try await dependency("postgres", { try await deps.writeModel.instance(database, classID, id) }), !row.deleted else {
                throw ServiceError.notFound("no instance '\(id)' of '\(classID)' in '\(database)'")
            }
            return Response.json(["status": "success", "data": ["id": .string(row.id), "class": .string(row.classID), "data": row.data, "seq": .int(Int(row.seq))]])
        }

        router.add(.get, "/api/v1/commands/{command_id}/status", summary: "A command's status and history", role: reader, responses: [200: "the status", 404: "unknown command", 503: "command status unavailable (Redis down)"]) { _, context in
            let id = context.parameter("command_id")
            let caller = try context.caller()
            let status: OMSReadStore.CommandStatus?
            do {
                status = try await deps.readStore.status(command: id)
            } catch {
                throw ServiceError.unavailable("command_status_unavailable", "command status cannot be read now; the command itself still converges", underlying: error)
            }
            guard let status, status.tenant == caller.tenant else { throw ServiceError(.notFound, "command_not_found", "no command '\(id)'") }
            return Response.json(["status": "success", "data": status.json])
        }

        router.add(.get, "/api/v1/graph/{db}", summary: "Instances as graph nodes; FULL once the read model has the node's version", role: reader,
                   query: [QueryParameter("class", ["type": "string"], summary: "only this class")], responses: [200: "nodes and edges", 404: "unknown database"]) { request, context in
            let database = try await ownedDatabase(context, deps)
            let classID = request.uri.queryParameters["class"].map(String.init)
            let instances = try await dependency("postgres") { try await deps.writeModel.instances(of: database, classID: classID) }
            // Without Redis every node is PARTIAL: the graph still answers from the write model.
            let documents = (try? await deps.readStore.documents(database, instances.map { ($0.classID, $0.id) })) ?? instances.map { _ in nil }
            let nodes: [JSONValue] = zip(instances, documents).map { instance, document in
                let full = document.map { $0.seq == instance.seq && !$0.deleted } ?? false
                return ["id": .string(instance.id), "class": .string(instance.classID), "seq": .int(Int(instance.seq)), "data_status": full ? "FULL" : "PARTIAL"]
            }
            return Response.json(["status": "success", "data": ["nodes": .array(nodes), "edges": []]])
        }
    }

    // MARK: - Accepting a command

    static func accept(
        _ request: Request, _ context: ServiceRequestContext, _ deps: OMSAPIDependencies, type: OMSCommandType, database: String, aggregateID: String,
        expected: Int64?, payload: JSONValue, instanceID: String? = nil
    ) async throws -> Response {
        let caller = try context.caller()
        let idempotencyKey = try request.idempotencyKey()
        let commandID = idempotencyKey ?? UUID().uuidString.lowercased()
        var command = OMSEvent(
            eventID: commandID, kind: .command, eventType: type.rawValue, database: database, aggregateID: aggregateID, aggregateSequence: 0,
            commandID: commandID, actor: caller.subject, tenant: caller.tenant, correlationID: context.requestID, payload: payload)

        // A retry of a command already stored answers its first result; the same id with other content is refused.
        // Only a client's key can have been used before; a fresh UUID needs no lookup (one S3 GET less).
        if idempotencyKey != nil, let existing = try await dependency("s3", { try await deps.store.lookup(eventID: commandID) }) {
            guard existing.contentHash == command.contentHash else {
                throw ServiceError.conflict("event_id_reuse", "the idempotency key \(commandID) was used for another command", extra: ["event_id": .string(commandID)])
            }
            let stored = try await dependency("s3") { try await deps.store.read(key: existing.key) }
            return accepted(stored, instanceID: instanceID)
        }

        if type == .createDatabase {
            guard try await dependency("postgres", { try await deps.writeModel.claimDatabaseName(database, tenant: caller.tenant) }) else {
                throw ServiceError.conflict("database_exists", "a database named '\(database)' exists")
            }
        }
        let sequence: Int64
        do {
            sequence = try await dependency("postgres") { () async throws -> Int64 in
                if let expected {
                    guard let reserved = try await deps.aggregates.tryReserveNext(aggregateID, ifExpected: expected) else {
                        throw ServiceError.notFound("'\(aggregateID)' does not exist")
                    }
                    return reserved
                }
                return try await deps.aggregates.reserveNext(aggregateID, seed: 0, ifExpected: 0)
            }
        } catch let conflict as OptimisticConcurrencyConflict {
            if expected != nil, let audit = deps.writeModel.auditTrail {
                await audit.refused(OMSAuditTrail.conflict(caller, type, database: database, aggregateID: aggregateID, expected: conflict.expected, actual: conflict.actual, requestID: context.requestID), requestID: context.requestID)
            }
            if expected == nil {
                throw ServiceError.conflict(type == .createOntology ? "class_exists" : type == .createDatabase ? "database_exists" : "instance_exists", "'\(aggregateID)' exists already")
            }
            throw ServiceError.conflict("optimistic_concurrency_conflict", "'\(aggregateID)' is at version \(conflict.actual), not \(conflict.expected)",
                                        extra: ["aggregate_id": .string(aggregateID), "expected_seq": .int(Int(conflict.expected)), "actual_seq": .int(Int(conflict.actual))])
        } catch {
            if type == .createDatabase { try? await deps.writeModel.releaseDatabaseName(database) }
            throw error
        }

        command.aggregateSequence = sequence
        do {
            let outcome = try await dependency("s3") { [command] in try await deps.store.append(command, checkedAbsent: true) }
            if case .duplicate(let entry) = outcome {
                // A concurrent retry of the same key stored it first: answer with that one.
                command = try await dependency("s3") { try await deps.store.read(key: entry.key) }
            }
        } catch {
            if let cause = (error as? ServiceError)?.underlying, appendOutcomeUnknown(cause) {
                // The event store took the request and did not answer: the command may be stored, so neither the
                // version nor the name is given back, and the client learns that a retry with the same key (or the
                // command's status) tells, instead of a refusal that could turn out false.
                throw ServiceError(
                    .serviceUnavailable, "event_store_outcome_unknown",
                    "the event store did not confirm command \(commandID) in time; it may still be applied: retry with the same Idempotency-Key or follow its status",
                    extra: ["command_id": .string(commandID)], retryAfterSeconds: 1, underlying: cause)
            }
            // Nothing may stay half-written: give the version back (unless someone moved past it, impossible
            // without having seen it) and the database name.
            await rollBack(aggregateID: aggregateID, sequence: sequence, deps)
            if type == .createDatabase { try? await deps.writeModel.releaseDatabaseName(database) }
            throw error
        }
        do {
            try await deps.readStore.record(command: commandID, .pending, tenant: caller.tenant, aggregateID: aggregateID)
        } catch {
            deps.logger.warning("command status not recorded (Redis); the command still converges", metadata: ["command_id": "\(commandID)", "error": "\(error)"])
        }
        return accepted(command, instanceID: instanceID)
    }

    /// Whether a failed append may still have stored the event: the S3 request was sent and no answer came (a
    /// timeout, a connection dropped mid-request), as when S3 is shutting down, or the event object was stored and
    /// only its index entry failed. A connection refused, an answer
    /// with an error, or a failure in Postgres before the PUT, means nothing was stored.
    public static func appendOutcomeUnknown(_ error: any Error) -> Bool {
        // Stored in the log, only its index entry missing: the command will be applied.
        if error is StoredWithoutIndex { return true }
        return OMSEventStore.mayHaveStored(error)
    }

    static func accepted(_ command: OMSEvent, instanceID: String?) -> Response {
        var data: [String: JSONValue] = ["command_id": .string(command.commandID), "aggregate_id": .string(command.aggregateID), "seq": .int(Int(command.aggregateSequence))]
        if let instanceID = instanceID ?? command.payload["instance_id"]?.stringValue { data["instance_id"] = .string(instanceID) }
        return Response.json(["status": "accepted", "data": .object(data)], status: .accepted)
    }

    static func rollBack(aggregateID: String, sequence: Int64, _ deps: OMSAPIDependencies) async {
        let allocator = deps.aggregates
        let query: PostgresQuery = """
            UPDATE \(unescaped: allocator.schema.quoted).aggregate_versions SET last_sequence = last_sequence - 1
            WHERE handler = \(allocator.handler) AND aggregate_id = \(aggregateID) AND last_sequence = \(sequence)
            """
        do {
            _ = try await queryRows(allocator.client, query, deadline: .seconds(5), doing: "giving back version \(sequence) of \(aggregateID)", logger: deps.logger)
        } catch {
            deps.logger.error("could not give back a reserved version; the next write with the old expected_seq will conflict", metadata: ["aggregate_id": "\(aggregateID)", "error": "\(error)"])
        }
    }

    // MARK: - Helpers

    /// The database named in the path, if the caller's tenant owns it (another tenant's is a 404 too).
    static func ownedDatabase(_ context: ServiceRequestContext, _ deps: OMSAPIDependencies) async throws -> String {
        let database = context.parameter("db")
        let caller = try context.caller()
        guard OMSNames.validDatabase(database), try await dependency("postgres", { try await deps.writeModel.owner(of: database) }) == caller.tenant else {
            throw ServiceError(.notFound, "database_not_found", "no database '\(database)'")
        }
        return database
    }

    static func ownedClass(_ context: ServiceRequestContext, _ deps: OMSAPIDependencies) async throws -> (String, OMSWriteModel.ClassRow) {
        let database = try await ownedDatabase(context, deps)
        let classID = context.parameter("class")
        guard let row = try await dependency("postgres", { try await deps.writeModel.classRow(database, classID) }) else {
            throw ServiceError(.notFound, "class_not_found", "no class '\(classID)' in '\(database)'")
        }
        return (database, row)
    }

    static func validate(_ data: [String: JSONValue], _ classRow: OMSWriteModel.ClassRow) throws {
        do {
            try OMSValidation.validate(data, against: classRow.properties)
        } catch {
            throw ServiceError.badRequest("invalid_field", error.message, extra: ["field": .string("data.\(error.field)")])
        }
    }

    static func requiredExpectedSeq(_ request: Request) throws -> Int64 {
        guard let value = try request.integerQuery("expected_seq") else {
            throw ServiceError.badRequest("missing_parameter", "the query parameter 'expected_seq' is required", extra: ["field": "expected_seq"])
        }
        return Int64(value)
    }

    /// Runs a call to a dependency; a failure that is not the caller's fault becomes a 503 with Retry-After
    /// naming the dependency, never a 500.
    static func dependency<Result: Sendable>(_ name: String, _ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let error as ServiceError {
            throw error
        } catch let error as OptimisticConcurrencyConflict {
            throw error
        } catch let error as ProdReadyError where error.code == .invalidArgument {
            throw ServiceError.badRequest("invalid_argument", error.message)
        } catch let error as ProdReadyError where error.code == .notFound {
            throw ServiceError(.notFound, "not_found", error.message)
        } catch let error as ProdReadyError where error.code == .preconditionFailed {
            throw ServiceError(.conflict, "precondition_failed", error.message)
        } catch {
            let code = name == "postgres" ? "database_unavailable" : name == "s3" ? "event_store_unavailable" : "\(name)_unavailable"
            throw ServiceError.unavailable(code, "\(name) is unavailable; retry shortly", retryAfterSeconds: 1, underlying: error)
        }
    }
}

extension Request {
    /// The client's `Idempotency-Key`: the command's id, so a retry is recognised.
    func idempotencyKey() throws -> String? {
        guard let key = headers[HTTPField.Name("Idempotency-Key")!] else { return nil }
        guard OMSNames.validEventID(key) else {
            throw ServiceError.badRequest("invalid_header", "Idempotency-Key must match [A-Za-z0-9][A-Za-z0-9_-]{0,127}", extra: ["field": "Idempotency-Key"])
        }
        return key
    }
}
