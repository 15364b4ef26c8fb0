public import Foundation

/// Decodes `Decodable` types from JSON bytes through `JSONParser` and a `Decoder` over the parsed `JSONValue`,
/// for hot paths where Foundation's `JSONDecoder` cost most of the CPU (the audit consumer decodes every event
/// twice: its envelope header, then the whole record).
///
/// It reads what `JSONDecoder` reads and refuses what it refuses, with `DecodingError`s carrying the coding path,
/// with two differences that do not matter to the types it serves: numbers convert between integer and
/// floating-point types only when the value is exactly representable, and `Date` has no default strategy: pass
/// `date`. A `JSONValue` member is handed over as parsed, with no decoding of its own.
public struct JSONValueDecoder: Sendable {
    public var date: (@Sendable (String) -> Date?)?

    public init(date: (@Sendable (String) -> Date?)? = nil) {
        self.date = date
    }

    public func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        try decode(type, from: try JSONValue.parse(bytes))
    }

    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try ValueDecoder(value: value, codingPath: [], date: date).decodeValue(type)
    }
}

private struct ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let date: (@Sendable (String) -> Date?)?
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let fields) = value else { throw mismatch([String: JSONValue].self, value, codingPath) }
        return KeyedDecodingContainer(KeyedContainer(fields: fields, codingPath: codingPath, date: date))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([JSONValue].self, value, codingPath) }
        return UnkeyedContainer(elements: elements, codingPath: codingPath, date: date)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleContainer(value: value, codingPath: codingPath, date: date)
    }

    func decodeValue<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == JSONValue.self { return value as! T }
        if T.self == Date.self {
            guard case .string(let text) = value else { throw mismatch(String.self, value, codingPath) }
            guard let parse = date else {
                throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "this decoder has no date strategy"))
            }
            guard let parsed = parse(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "'\(text)' is not an ISO 8601 timestamp"))
            }
            return parsed as! T
        }
        return try T(from: self)
    }
}

private func mismatch(_ expected: Any.Type, _ value: JSONValue, _ path: [any CodingKey]) -> DecodingError {
    let found: String
    switch value {
    case .null: found = "null"
    case .bool: found = "a boolean"
    case .int, .double: found = "a number"
    case .string: found = "a string"
    case .array: found = "an array"
    case .object: found = "an object"
    }
    if case .null = value {
        return .valueNotFound(expected, .init(codingPath: path, debugDescription: "Expected \(expected) value but found null instead."))
    }
    return .typeMismatch(expected, .init(codingPath: path, debugDescription: "Expected to decode \(expected) but found \(found) instead."))
}

private struct IndexKey: CodingKey {
    var stringValue: String { "Index \(intValue!)" }
    var intValue: Int?
    init(_ index: Int) { intValue = index }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.intValue = intValue }
}

/// Scalars, shared by the three containers.
private func decodeScalar<T>(_ type: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
    func integer<I: FixedWidthInteger>(_: I.Type) throws -> I {
        let exact: I?
        switch value {
        case .int(let number): exact = I(exactly: number)
        case .double(let number): exact = I(exactly: number)
        default: throw mismatch(I.self, value, path)
        }
        guard let exact else {
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "Number \(value.text) does not fit in \(I.self)."))
        }
        return exact
    }
    switch type {
    case is String.Type:
        guard case .string(let text) = value else { throw mismatch(String.self, value, path) }
        return text as! T
    case is Bool.Type:
        guard case .bool(let flag) = value else { throw mismatch(Bool.self, value, path) }
        return flag as! T
    case is Int.Type: return try integer(Int.self) as! T
    case is Int64.Type: return try integer(Int64.self) as! T
    case is Int32.Type: return try integer(Int32.self) as! T
    case is Int16.Type: return try integer(Int16.self) as! T
    case is Int8.Type: return try integer(Int8.self) as! T
    case is UInt.Type: return try integer(UInt.self) as! T
    case is UInt64.Type: return try integer(UInt64.self) as! T
    case is UInt32.Type: return try integer(UInt32.self) as! T
    case is UInt16.Type: return try integer(UInt16.self) as! T
    case is UInt8.Type: return try integer(UInt8.self) as! T
    case is Double.Type, is Float.Type:
        let number: Double
        switch value {
        case .int(let integer): number = Double(integer)
        case .double(let double): number = double
        default: throw mismatch(T.self, value, path)
        }
        return (type == Float.self ? Float(number) as Any : number as Any) as! T
    default:
        preconditionFailure("decodeScalar called for \(T.self)")
    }
}

private struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let fields: [String: JSONValue]
    let codingPath: [any CodingKey]
    let date: (@Sendable (String) -> Date?)?

    var allKeys: [Key] { fields.keys.compactMap { Key(stringValue: $0) } }
    func contains(_ key: Key) -> Bool { fields[key.stringValue] != nil }

    private func field(_ key: Key) throws -> JSONValue {
        guard let value = fields[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "No value associated with key \(key.stringValue)."))
        }
        return value
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        if case .null = try field(key) { return true }
        return false
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decodeScalar(type, field(key), codingPath + [key]) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decodeScalar(type, field(key), codingPath + [key]) }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try ValueDecoder(value: field(key), codingPath: codingPath + [key], date: date).decodeValue(type)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try ValueDecoder(value: field(key), codingPath: codingPath + [key], date: date).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try ValueDecoder(value: field(key), codingPath: codingPath + [key], date: date).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        ValueDecoder(value: fields["super"] ?? .null, codingPath: codingPath, date: date)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        ValueDecoder(value: fields[key.stringValue] ?? .null, codingPath: codingPath + [key], date: date)
    }
}

private struct UnkeyedContainer: UnkeyedDecodingContainer {
    let elements: [JSONValue]
    let codingPath: [any CodingKey]
    let date: (@Sendable (String) -> Date?)?
    var currentIndex = 0

    init(elements: [JSONValue], codingPath: [any CodingKey], date: (@Sendable (String) -> Date?)?) {
        self.elements = elements
        self.codingPath = codingPath
        self.date = date
    }

    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    private mutating func next<T>(_ type: T.Type) throws -> (JSONValue, [any CodingKey]) {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(type, .init(codingPath: codingPath + [IndexKey(currentIndex)], debugDescription: "Unkeyed container is at end."))
        }
        defer { currentIndex += 1 }
        return (elements[currentIndex], codingPath + [IndexKey(currentIndex)])
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { throw DecodingError.valueNotFound(JSONValue.self, .init(codingPath: codingPath, debugDescription: "Unkeyed container is at end.")) }
        if case .null = elements[currentIndex] {
            currentIndex += 1
            return true
        }
        return false
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: String.Type) throws -> String { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Double.Type) throws -> Double { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Float.Type) throws -> Float { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Int.Type) throws -> Int { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: UInt.Type) throws -> UInt { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { let (value, path) = try next(type); return try decodeScalar(type, value, path) }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (value, path) = try next(type)
        return try ValueDecoder(value: value, codingPath: path, date: date).decodeValue(type)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let (value, path) = try next([String: JSONValue].self)
        return try ValueDecoder(value: value, codingPath: path, date: date).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (value, path) = try next([JSONValue].self)
        return try ValueDecoder(value: value, codingPath: path, date: date).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (value, path) = try next(JSONValue.self)
        return ValueDecoder(value: value, codingPath: path, date: date)
    }
}

private struct SingleContainer: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let date: (@Sendable (String) -> Date?)?

    func decodeNil() -> Bool {
        if case .null = value { return true }
        return false
    }

    func decode(_ type: Bool.Type) throws -> Bool { try decodeScalar(type, value, codingPath) }
    func decode(_ type: String.Type) throws -> String { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Float.Type) throws -> Float { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Int.Type) throws -> Int { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: UInt.Type) throws -> UInt { try decodeScalar(type, value, codingPath) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decodeScalar(type, value, codingPath) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decodeScalar(type, value, codingPath) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try ValueDecoder(value: value, codingPath: codingPath, date: date).decodeValue(type)
    }
}
