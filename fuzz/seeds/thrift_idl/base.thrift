// Included by kitchen_sink.thrift (found through the include directory `tests/idl`).
namespace rs base
namespace go github.com/example/base

/** How bad a problem is. */
enum Level {
    LOW = 1,
    MID,          // 2
    HIGH = 0x10,
    NEGATIVE = -3,
}

struct Meta {
    1: optional string trace_id,
    2: map<string, string> tags,
}

exception NotFound {
    1: required string what,
    2: optional Level level,
}

const i32 DEFAULT_LIMIT = 100

service BaseService {
    string Ping(),
}
