//! XEP-0004 data forms: reading submitted fields and building result forms.

use minidom::Element;

use super::{attr, ns};

/// One field of a form: its `var` and its values (trimmed, empty ones dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name.
    pub var: String,
    /// The values in document order.
    pub values: Vec<String>,
}

/// A data form as submitted; lenient about `type` (absent, `form` or `submit`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Form {
    /// The `type` attribute, if any.
    pub kind: Option<String>,
    /// The fields that carry a `var`, in document order.
    pub fields: Vec<Field>,
}

impl Form {
    /// Reads `<x xmlns='jabber:x:data'/>`; `None` for any other element.
    pub fn from_element(el: &Element) -> Option<Form> {
        if !el.is("x", ns::DATA_FORMS) {
            return None;
        }
        let fields = el
            .children()
            .filter(|c| c.is("field", ns::DATA_FORMS))
            .filter_map(|f| {
                let var = f.attr("var")?.to_owned();
                let values = f
                    .children()
                    .filter(|v| v.is("value", ns::DATA_FORMS))
                    .map(|v| v.text().trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .collect();
                Some(Field { var, values })
            })
            .collect();
        Some(Form {
            kind: el.attr("type").map(str::to_owned),
            fields,
        })
    }

    /// The first child of `parent` that is a data form.
    pub fn find_in(parent: &Element) -> Option<Form> {
        parent.children().find_map(Form::from_element)
    }

    /// The first value of the first field named `var`.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.var == var)
            .and_then(|f| f.values.first())
            .map(String::as_str)
    }

    /// Whether a field named `var` is present, with or without a value.
    pub fn has_field(&self, var: &str) -> bool {
        self.fields.iter().any(|f| f.var == var)
    }
}

/// The first non-empty value (trimmed) of the field `var` of the first data form among
/// `parent`'s children, without reading the other fields into a [`Form`]: the same
/// answer as `Form::find_in(parent)?.value(var)`, for the hot path of publishes.
pub fn find_value(parent: &Element, var: &str) -> Option<String> {
    let form = parent.children().find(|c| c.is("x", ns::DATA_FORMS))?;
    let field = form
        .children()
        .find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some(var))?;
    field
        .children()
        .filter(|v| v.is("value", ns::DATA_FORMS))
        .map(|v| v.text())
        .find_map(|v| {
            let t = v.trim();
            (!t.is_empty()).then(|| t.to_owned())
        })
}

/// A `type='form'` form of single-valued fields `(type, var, value)`: the shape of the
/// Java p2's registration reply, which clients parse.
pub fn result_form(fields: &[(&str, &str, &str)]) -> Element {
    let mut b = Element::builder("x", ns::DATA_FORMS).attr(attr("type"), "form");
    for (kind, var, value) in fields {
        b = b.append(
            Element::builder("field", ns::DATA_FORMS)
                .attr(attr("type"), *kind)
                .attr(attr("var"), *var)
                .append(Element::builder("value", ns::DATA_FORMS).append(*value))
                .build(),
        );
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_leniently() {
        let el: Element = "<x xmlns='jabber:x:data' type='submit'>\
             <field var='token'><value> abc </value></field>\
             <field var='empty'/>\
             <field var='blank'><value>  </value></field>\
             <field><value>no var</value></field>\
             <field var='multi'><value>1</value><value>2</value></field></x>"
            .parse()
            .unwrap();
        let form = Form::from_element(&el).unwrap();
        assert_eq!(form.kind.as_deref(), Some("submit"));
        assert_eq!(form.value("token"), Some("abc"));
        assert_eq!(form.value("empty"), None);
        assert!(form.has_field("empty"));
        assert_eq!(form.value("blank"), None);
        assert_eq!(form.value("multi"), Some("1"));
        assert_eq!(form.fields.len(), 4);
        assert_eq!(form.value("missing"), None);
    }

    #[test]
    fn find_value_agrees_with_the_form() {
        let parent: Element = "<p xmlns='urn:example'><y xmlns='jabber:x:data'/>\
             <x xmlns='jabber:x:data'><field var='a'/><field var='b'><value> </value>\
             <value> two </value></field><field var='b'><value>late</value></field></x>\
             <x xmlns='jabber:x:data'><field var='c'><value>c</value></field></x></p>"
            .parse()
            .unwrap();
        let form = Form::find_in(&parent).unwrap();
        for var in ["a", "b", "c", "missing"] {
            assert_eq!(
                find_value(&parent, var).as_deref(),
                form.value(var),
                "{var}"
            );
        }
    }

    #[test]
    fn ignores_other_elements() {
        let el: Element = "<x xmlns='jabber:x:oob'/>".parse().unwrap();
        assert_eq!(Form::from_element(&el), None);
    }

    #[test]
    fn builds_the_reply_form() {
        let el = result_form(&[("text-single", "node", "eKxTS5n3bOe0")]);
        assert_eq!(
            super::super::stanza::render(&el),
            "<x xmlns='jabber:x:data' type='form'><field type='text-single' var='node'>\
             <value>eKxTS5n3bOe0</value></field></x>"
        );
    }
}
