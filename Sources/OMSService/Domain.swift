import Foundation
public import ProdReadyCore

/// The OMS's command and domain event types (the `event_type` of the store's records).
public enum OMSCommandType: String, Sendable, CaseIterable {
    case createDatabase = "CREATE_DATABASE"
    case deleteDatabase = "DELETE_DATABASE"
    case createOntology = "CREATE_ONTOLOGY"
    case createInstance = "CREATE_INSTANCE"
    case updateInstance = "UPDATE_INSTANCE"
    case deleteInstance = "DELETE_INSTANCE"

    /// The domain event a successfully applied command produces.
    public var resultingEvent: String {
        switch self {
        case .createDatabase: "DATABASE_CREATED"
        case .deleteDatabase: "DATABASE_DELETED"
        case .createOntology: "ONTOLOGY_CREATED"
        case .createInstance: "INSTANCE_CREATED"
        case .updateInstance: "INSTANCE_UPDATED"
        case .deleteInstance: "INSTANCE_DELETED"
        }
    }
}

/// Names and aggregate ids. Aggregate ids use ':' between parts, so no part may contain one.
public enum OMSNames {
    public static func validDatabase(_ name: String) -> Bool { name.range(of: "^[a-z][a-z0-9_-]{2,62}$", options: .regularExpression) != nil }
    public static func validClass(_ id: String) -> Bool { id.range(of: "^[A-Za-z][A-Za-z0-9_]{0,63}$", options: .regularExpression) != nil }
    public static func validInstance(_ id: String) -> Bool { id.range(of: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", options: .regularExpression) != nil }
    public static func validProperty(_ name: String) -> Bool { name.range(of: "^[A-Za-z_][A-Za-z0-9_]{0,63}$", options: .regularExpression) != nil }
    /// Idempotency keys become event ids and S3 key parts.
    public static func validEventID(_ id: String) -> Bool { id.range(of: "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", options: .regularExpression) != nil }

    public static func databaseAggregate(_ database: String) -> String { database }
    public static func classAggregate(_ database: String, _ classID: String) -> String { "\(database):\(classID)" }
    public static func instanceAggregate(_ database: String, _ classID: String, _ instanceID: String) -> String { "\(database):\(classID):\(instanceID)" }
}

/// One property of a class (ontology), and what values it accepts.
public struct OMSProperty: Codable, Sendable, Equatable {
    public static let types: Set<String> = ["string", "integer", "number", "boolean", "object", "array"]
    public var name: String
    public var type: String
    public var required: Bool

    public init(name: String, type: String, required: Bool) {
        self.name = name
        self.type = type
        self.required = required
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        type = try container.decode(String.self, forKey: .type)
        required = try container.decodeIfPresent(Bool.self, forKey: .required) ?? false
    }

    func accepts(_ value: JSONValue) -> Bool {
        switch (type, value) {
        case ("string", .string), ("integer", .int), ("number", .int), ("number", .double), ("boolean", .bool), ("object", .object), ("array", .array): true
        default: false
        }
    }

    public var json: JSONValue { ["name": .string(name), "type": .string(type), "required": .bool(required)] }
}

/// Why instance data does not fit its class: the property named, for a 400.
public struct OMSValidationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var message: String
    public var description: String { message }
}

public enum OMSValidation {
    /// Checks `data` against a class's properties: every required one present and not null, each present one
    /// of its type, no property the class does not define.
    public static func validate(_ data: [String: JSONValue], against properties: [OMSProperty]) throws(OMSValidationError) {
        let byName = Dictionary(properties.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for name in data.keys.sorted() where byName[name] == nil {
            throw OMSValidationError(field: name, message: "the class has no property '\(name)'")
        }
        for property in properties {
            guard let value = data[property.name], value != .null else {
                if property.required { throw OMSValidationError(field: property.name, message: "the required property '\(property.name)' is missing") }
                continue
            }
            guard property.accepts(value) else {
                throw OMSValidationError(field: property.name, message: "the property '\(property.name)' must be of type \(property.type)")
            }
        }
    }

    /// Checks an ontology's own definition.
    public static func validateOntology(id: String, label: String, properties: [OMSProperty]) throws(OMSValidationError) {
        guard OMSNames.validClass(id) else { throw OMSValidationError(field: "id", message: "the class id must match [A-Za-z][A-Za-z0-9_]{0,63}") }
        guard !label.isEmpty, label.count <= 256 else { throw OMSValidationError(field: "label", message: "the label must be 1 to 256 characters") }
        guard properties.count <= 256 else { throw OMSValidationError(field: "properties", message: "at most 256 properties") }
        var seen: Set<String> = []
        for (index, property) in properties.enumerated() {
            guard OMSNames.validProperty(property.name) else {
                throw OMSValidationError(field: "properties[\(index)].name", message: "property names must match [A-Za-z_][A-Za-z0-9_]{0,63}")
            }
            guard OMSProperty.types.contains(property.type) else {
                throw OMSValidationError(field: "properties[\(index)].type", message: "the property type must be one of \(OMSProperty.types.sorted().joined(separator: ", ")); got '\(property.type)'")
            }
            guard seen.insert(property.name).inserted else {
                throw OMSValidationError(field: "properties[\(index)].name", message: "the property '\(property.name)' is defined twice")
            }
        }
    }
}
