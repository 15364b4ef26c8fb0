import Crypto
#if canImport(Glibc)
import Glibc
#endif

/// AWS Signature Version 4 for S3 requests (header-based, payload hash sent as `x-amz-content-sha256`).
public struct SigV4Signer: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var region: String
    public var service: String

    public init(accessKey: String, secretKey: String, region: String, service: String = "s3") {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
        self.service = service
    }

    /// The headers to add to a request: `Authorization`, `x-amz-date`, `x-amz-content-sha256`.
    ///
    /// - Parameters:
    ///   - path: the already percent-encoded absolute path (`/bucket/key`).
    ///   - query: decoded query parameters; they are encoded and sorted here.
    ///   - headers: every header to sign (at least `host`); names are lower-cased here.
    ///   - payloadHash: hex SHA-256 of the body.
    ///   - date: seconds since 1970 (UTC).
    public func signatureHeaders(
        method: String,
        path: String,
        query: [(String, String)],
        headers: [(String, String)],
        payloadHash: String,
        date: Int
    ) -> [(String, String)] {
        let (amzDate, day) = Self.timestamps(date)
        var signed = headers.map { ($0.0.lowercased(), $0.1.trimmingSpaces()) }
        signed.append(("x-amz-content-sha256", payloadHash))
        signed.append(("x-amz-date", amzDate))
        signed.sort { $0.0 < $1.0 }
        let canonicalHeaders = signed.map { "\($0.0):\($0.1)\n" }.joined()
        let signedHeaderNames = signed.map(\.0).joined(separator: ";")
        let encodedQuery: [(String, String)] = query.map { (Self.uriEncode($0.0), Self.uriEncode($0.1)) }
        let sortedQuery = encodedQuery.sorted { (left: (String, String), right: (String, String)) -> Bool in
            left.0 == right.0 ? left.1 < right.1 : left.0 < right.0
        }
        let canonicalQuery = sortedQuery.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        let canonicalRequest = [method, path, canonicalQuery, canonicalHeaders, signedHeaderNames, payloadHash].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, Self.hexSHA256(Array(canonicalRequest.utf8))].joined(separator: "\n")

        var key = SymmetricKey(data: Array("AWS4\(secretKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        let signature = HexBytes(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key)).hex
        let authorization = "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(scope), SignedHeaders=\(signedHeaderNames), Signature=\(signature)"
        return [("Authorization", authorization), ("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash)]
    }

    public static func hexSHA256(_ bytes: [UInt8]) -> String {
        HexBytes(SHA256.hash(data: bytes)).hex
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters (and `/` when `keepSlash`).
    public static func uriEncode(_ text: String, keepSlash: Bool = false) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                result.append("/")
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                result += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return result
    }

    static func timestamps(_ date: Int) -> (amzDate: String, day: String) {
        var time = time_t(date)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let day = pad(parts.tm_year + 1900, 4) + pad(parts.tm_mon + 1, 2) + pad(parts.tm_mday, 2)
        let amzDate = day + "T" + pad(parts.tm_hour, 2) + pad(parts.tm_min, 2) + pad(parts.tm_sec, 2) + "Z"
        return (amzDate, day)
    }
}

/// Bytes with a lower-case hex rendering.
struct HexBytes {
    let bytes: [UInt8]
    init<D: Sequence>(_ digest: D) where D.Element == UInt8 { bytes = Array(digest) }
    var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while slice.first == " " { slice.removeFirst() }
        while slice.last == " " { slice.removeLast() }
        return String(slice)
    }
}
