//! The selector parser: a lexer that cannot fail, then recursive descent over its tokens
//! with an error for every way a pipeline author can go wrong, each at the character where
//! it happened.

use std::collections::BTreeSet;

use super::{
    MAX_REQUIREMENTS, Op, Requirement, Selector, SelectorError, key_problem, quote, value_problem,
};

/// What the lexer tells apart. Words are keys, values and the `in`/`notin` keywords, which
/// only the parser can tell apart (`in` is a fine key or value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Word,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Open,
    Close,
    Comma,
    Greater,
    Less,
    End,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// Where the token starts, in characters (for errors) and in bytes (for slicing).
    position: usize,
    byte: usize,
}

/// The whitespace apimachinery's lexer skips.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The characters that end a word, as in apimachinery.
fn is_symbol(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

/// Splits `text` into tokens, ending with [`Kind::End`]. Every character is whitespace, a
/// symbol or part of a word, so lexing cannot fail; bad words fail validation later.
fn lex(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().enumerate().peekable();
    while let Some((position, (byte, c))) = chars.next() {
        if is_space(c) {
            continue;
        }
        let mut followed_by = |wanted: char| chars.next_if(|&(_, (_, n))| n == wanted).is_some();
        let kind = match c {
            '!' if followed_by('=') => Kind::NotEquals,
            '!' => Kind::Not,
            '=' if followed_by('=') => Kind::DoubleEquals,
            '=' => Kind::Equals,
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            '>' => Kind::Greater,
            '<' => Kind::Less,
            _ => {
                while chars
                    .next_if(|&(_, (_, n))| !is_space(n) && !is_symbol(n))
                    .is_some()
                {}
                Kind::Word
            }
        };
        let end = chars.peek().map_or(text.len(), |&(_, (b, _))| b);
        tokens.push(Token {
            kind,
            text: &text[byte..end],
            position,
            byte,
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        text: "",
        position: text.chars().count(),
        byte: text.len(),
    });
    tokens
}

/// A recursive-descent parser over the tokens; each token is looked at a bounded number of
/// times, so parsing is linear in the input.
pub(super) struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token<'a>>,
    next: usize,
}

/// How a token reads in an error message.
fn describe(token: Token<'_>) -> String {
    match token.kind {
        Kind::End => "the end of the selector".into(),
        _ => quote(token.text),
    }
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            tokens: lex(text),
            next: 0,
        }
    }

    fn peek(&self) -> Token<'a> {
        self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token<'a> {
        let token = self.peek();
        if token.kind != Kind::End {
            self.next += 1;
        }
        token
    }

    pub(super) fn selector(&mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().kind == Kind::End {
            return Ok(Selector::everything());
        }
        loop {
            let start = self.peek();
            if requirements.len() == MAX_REQUIREMENTS {
                return Err(SelectorError::new(
                    start.position,
                    format!(
                        "too many requirements: a selector may have at most {MAX_REQUIREMENTS}"
                    ),
                ));
            }
            requirements.push(self.requirement()?);
            let after = self.bump();
            match after.kind {
                Kind::End => return Ok(Selector::from_requirements(requirements)),
                Kind::Comma => {}
                _ => {
                    return Err(SelectorError::new(
                        after.position,
                        format!(
                            "expected \",\" or the end of the selector after {}, found {}",
                            quote(self.text[start.byte..after.byte].trim_end_matches(is_space)),
                            describe(after)
                        ),
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let first = self.peek();
        match first.kind {
            Kind::Not => {
                self.bump();
                let key = self.key("a label key after \"!\"")?;
                let next = self.peek();
                if !matches!(next.kind, Kind::Comma | Kind::End) {
                    return Err(SelectorError::new(
                        next.position,
                        format!(
                            "{} selects clusters without the key and takes no operator or \
                             value; expected \",\" or the end of the selector, found {}",
                            quote(&format!("!{key}")),
                            describe(next)
                        ),
                    ));
                }
                Ok(Requirement {
                    key,
                    op: Op::DoesNotExist,
                })
            }
            Kind::Word => {
                let key = self.key("a label key")?;
                let op = self.operator(&key)?;
                Ok(Requirement { key, op })
            }
            _ => Err(SelectorError::new(
                first.position,
                format!("expected a label key or \"!\", found {}", describe(first)),
            )),
        }
    }

    /// A word that must be a valid label key; `expected` says what was wanted, for the error.
    fn key(&mut self, expected: &str) -> Result<String, SelectorError> {
        let token = self.bump();
        if token.kind != Kind::Word {
            return Err(SelectorError::new(
                token.position,
                format!("expected {expected}, found {}", describe(token)),
            ));
        }
        self.not_followed_by_word(token, "key")?;
        if let Some(problem) = key_problem(token.text) {
            return Err(SelectorError::new(
                token.position,
                format!("{} is not a valid label key: {problem}", quote(token.text)),
            ));
        }
        Ok(token.text.to_owned())
    }

    /// What follows a key: an operator and its values, or nothing (the key must exist).
    fn operator(&mut self, key: &str) -> Result<Op, SelectorError> {
        let token = self.peek();
        match token.kind {
            Kind::Comma | Kind::End => Ok(Op::Exists),
            Kind::Equals | Kind::DoubleEquals => {
                self.bump();
                Ok(Op::Equals(self.value(token)?))
            }
            Kind::NotEquals => {
                self.bump();
                Ok(Op::NotEquals(self.value(token)?))
            }
            Kind::Word if token.text == "in" => {
                self.bump();
                Ok(Op::In(self.list(token)?))
            }
            Kind::Word if token.text == "notin" => {
                self.bump();
                Ok(Op::NotIn(self.list(token)?))
            }
            Kind::Greater | Kind::Less => Err(SelectorError::new(
                token.position,
                format!(
                    "{} is not supported: label selectors compare with \"=\", \"==\", \"!=\", \
                     \"in\" and \"notin\" only",
                    describe(token)
                ),
            )),
            _ => Err(SelectorError::new(
                token.position,
                format!(
                    "expected \"=\", \"==\", \"!=\", \"in\", \"notin\", \",\" or the end of the \
                     selector after label key {}, found {}",
                    quote(key),
                    describe(token)
                ),
            )),
        }
    }

    /// The value after `=`, `==` or `!=`: a word, or nothing (the empty value) when the
    /// requirement ends there.
    fn value(&mut self, operator: Token<'a>) -> Result<String, SelectorError> {
        let token = self.peek();
        match token.kind {
            Kind::Comma | Kind::End => Ok(String::new()),
            Kind::Word => {
                self.bump();
                self.checked_value(token)
            }
            _ => Err(SelectorError::new(
                token.position,
                format!(
                    "expected a value after {}, found {}",
                    describe(operator),
                    describe(token)
                ),
            )),
        }
    }

    /// The parenthesised values after `in` or `notin`. As in apimachinery, an empty place
    /// (`(a,)`, `(,)`) is the empty value; unlike it, `()` is refused.
    fn list(&mut self, operator: Token<'a>) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.bump();
        if open.kind != Kind::Open {
            return Err(SelectorError::new(
                open.position,
                format!(
                    "expected \"(\" after {}, found {}",
                    describe(operator),
                    describe(open)
                ),
            ));
        }
        if self.peek().kind == Kind::Close {
            return Err(SelectorError::new(
                self.peek().position,
                format!(
                    "empty value list: {} needs at least one value",
                    describe(operator)
                ),
            ));
        }
        let unterminated = |at: Token<'_>| {
            SelectorError::new(
                at.position,
                format!(
                    "unterminated value list: the \"(\" at character {} is never closed",
                    open.position
                ),
            )
        };
        let mut values = BTreeSet::new();
        loop {
            let place = self.peek();
            match place.kind {
                Kind::Word => {
                    self.bump();
                    values.insert(self.checked_value(place)?);
                }
                Kind::Comma | Kind::Close => {
                    values.insert(String::new());
                }
                Kind::End => return Err(unterminated(place)),
                _ => {
                    return Err(SelectorError::new(
                        place.position,
                        format!(
                            "expected a value, \",\" or \")\" in the value list, found {}",
                            describe(place)
                        ),
                    ));
                }
            }
            let separator = self.bump();
            match separator.kind {
                Kind::Comma => {}
                Kind::Close => return Ok(values),
                Kind::End => return Err(unterminated(separator)),
                _ => {
                    return Err(SelectorError::new(
                        separator.position,
                        format!(
                            "expected \",\" or \")\" in the value list, found {}",
                            describe(separator)
                        ),
                    ));
                }
            }
        }
    }

    /// A word just taken that must be a valid label value.
    fn checked_value(&self, token: Token<'a>) -> Result<String, SelectorError> {
        self.not_followed_by_word(token, "value")?;
        if let Some(problem) = value_problem(token.text) {
            return Err(SelectorError::new(
                token.position,
                format!(
                    "{} is not a valid label value: {problem}",
                    quote(token.text)
                ),
            ));
        }
        Ok(token.text.to_owned())
    }

    /// Two words in a row (other than a key and `in`/`notin`) are most likely one key or
    /// value with a space in it, so the error quotes both.
    fn not_followed_by_word(&self, token: Token<'a>, what: &str) -> Result<(), SelectorError> {
        let next = self.peek();
        let keyword = what == "key" && matches!(next.text, "in" | "notin");
        if next.kind != Kind::Word || keyword {
            return Ok(());
        }
        let missing = if what == "key" {
            "an operator"
        } else {
            "a \",\""
        };
        let both = &self.text[token.byte..next.byte + next.text.len()];
        Err(SelectorError::new(
            token.position,
            format!(
                "{} is not a valid label {what}: a {what} cannot contain whitespace (or \
                 {missing} is missing after {})",
                quote(both),
                quote(token.text)
            ),
        ))
    }
}
