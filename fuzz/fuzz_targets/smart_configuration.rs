//! A `.well-known/smart-configuration` document as discovery reads it: parsed
//! (`smart::parse_document`), then the introspection endpoints (`endpoints_from`, with and
//! without a required token endpoint) and the SHOF auth server (`auth_server_from`), for an
//! https FHIR base and a plain-http one; every URL taken must be https or on the base's
//! origin. The first line also goes through `keys::max_age` as a Cache-Control value.
#![no_main]

use hti_guard::fuzzing::smart_configuration;
use hti_guard::verify::keys::max_age;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for base in ["https://fhir.example/fhir", "http://fhir.local:8080/fhir/"] {
        let _ = smart_configuration(data, base);
    }
    if let Some(line) = data.split(|&b| b == b'\n').next()
        && let Ok(text) = std::str::from_utf8(line)
    {
        let _ = max_age(text);
    }
});
