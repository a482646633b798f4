//! The detector's vocabulary: word patterns and substrings per evidence category (English, in the
//! rule syntax of [`crate::inspect::rules`], matched on normalized text), phrases in other
//! languages (matched as plain substrings of the normalized text, only when it has non-ASCII
//! letters), and the word lists of the negation and quotation checks.

/// Evidence categories found in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cat {
    /// "ignore previous instructions", "you are now", "developer mode".
    Override,
    /// Hide something from the user, or claim an approval that was not given.
    Conceal,
    /// Credential files and key material (`~/.ssh`, `id_rsa`, `.env`).
    SecretFile,
    /// Words for secrets (password, private key, API key, token).
    SecretWord,
    /// The conversation, its history, the system prompt.
    Context,
    /// Sending something somewhere (`send ... to https://`, `bcc`).
    ExfilAction,
    /// Standing instructions that fire on a trigger (line jumping).
    Trigger,
    /// A description that changes how another tool or server must be used.
    Shadow,
    /// Addressing the model with orders.
    Directive,
    /// Shell command execution, installers, reverse shells.
    Command,
    /// Role or system markers, fake delimiters (`<system>`, `[INST]`, `<|im_start|>`).
    Role,
    /// Destructive operations (for annotations that claim otherwise).
    Destructive,
    /// Operations that change state (for a `readOnlyHint` that claims otherwise).
    Mutating,
}

pub const CATS: [Cat; 13] = [
    Cat::Override,
    Cat::Conceal,
    Cat::SecretFile,
    Cat::SecretWord,
    Cat::Context,
    Cat::ExfilAction,
    Cat::Trigger,
    Cat::Shadow,
    Cat::Directive,
    Cat::Command,
    Cat::Role,
    Cat::Destructive,
    Cat::Mutating,
];

impl Cat {
    pub fn index(self) -> usize {
        CATS.iter().position(|c| *c == self).unwrap_or(0)
    }

    pub fn id(self) -> &'static str {
        match self {
            Cat::Override => "override",
            Cat::Conceal => "conceal",
            Cat::SecretFile => "secret-file",
            Cat::SecretWord => "secret-word",
            Cat::Context => "context",
            Cat::ExfilAction => "exfil-action",
            Cat::Trigger => "trigger",
            Cat::Shadow => "shadow",
            Cat::Directive => "directive",
            Cat::Command => "command",
            Cat::Role => "role-marker",
            Cat::Destructive => "destructive",
            Cat::Mutating => "mutating",
        }
    }

    /// Whether a negation before or after the match ("rejects paths under ~/.ssh") cancels it.
    pub fn negatable(self) -> bool {
        matches!(self, Cat::SecretFile | Cat::SecretWord | Cat::Context | Cat::Command | Cat::ExfilAction | Cat::Destructive | Cat::Mutating)
    }
}

/// (category, word patterns, substrings).
pub const ENGLISH: &[(Cat, &[&str], &[&str])] = &[
    (
        Cat::Override,
        &[
            "ignore|disregard|forget|override|bypass|skip ~4 previous|prior|above|earlier|preceding|original|all|any|other|existing|safety|system instruction*|rule*|prompt*|guideline*|directive*|guardrail*|restriction*|polic*",
            "new|updated|real|actual|true|hidden|secret|additional ~1 instruction*|directive*|orders",
            "you are now|no",
            "act|acting as ~3 root|admin|administrator|unrestricted|developer|system|dan",
            "developer|god|debug|admin|jailbreak mode",
            "system override|overrid*|update|notice|directive|alert",
            "these instructions ~4 take|have precedence|priority",
            "supersede*|overrid* ~4 instruction*|rule*|prompt*|guideline*",
            "jailbreak*",
        ],
        &[],
    ),
    (
        Cat::Conceal,
        &[
            "dont|not|never|nothing|nobody ~2 tell|inform|mention|notify|reveal|disclose|alert|show|display ~3 user*|human|anyone|operator|them|nobody",
            "tell|inform|notify ~1 nobody|noone",
            "without ~3 tell*|inform*|notify*|ask*|mention*|alert*|show*|confirm*|consult*|bother* ~3 user*|human|them|anyone|operator",
            "without ~3 user*|human ~2 knowledge|consent|confirmation|approval|awareness|noticing",
            "silently|secretly|covertly|quietly|discreetly|invisibly|stealthily ~4 send|forward|include|add|copy|read|upload|run|execute|call|bcc|append|attach|post|exfiltrat*|collect|log|record|transmit|pass|use|invoke|redirect|route|change|replace|modify|install|download",
            "hide|conceal|keep ~4 from ~2 the|any ~1 user*|human|operator",
            "hide|conceal ~2 this|these|the ~2 instruction*|step*|note|message|call|request*|parameter|field",
            "user* ~4 already|previously ~3 approv*|authoriz*|authoris*|consent*|confirm*|agree*|grant*|allow*",
            "pre|already approved|authorized|authorised|confirmed|consented",
            "no|without need ~2 ask|confirm|notify|tell|mention|permission|approval|confirmation",
            "dont|not|never ~2 ask ~4 confirm*|permission|approval|user",
            "implementation detail|details",
            "user* ~3 should|must|will|need ~2 not|never ~2 see|know|notice|learn|find|be",
            "not|never ~3 visible|shown ~3 to the user*",
            "keep ~3 secret|hidden|confidential|private ~3 from",
            "approval ~3 not ~2 needed|required",
            "do not|dont ~2 mention|reference ~3 this|these instruction*|note|step",
            "without ~1 asking|prompting|telling|notifying|informing|mentioning",
            "need|needs not ~1 be ~1 mentioned|shown|disclosed|reported",
            "do not|dont|never ~1 list|show|display|include|mention ~3 this|the|that|these ~2 recipient*|address*|copy|copies|step|call|field",
            "user* ~2 does|do|need|needs ~1 not ~2 know|see|notice|be told",
            "only ~2 say|tell|report|answer ~3 that|it ~3 succeeded|worked|done|complete*",
            "just|only|simply ~2 report|say|tell|reply|answer ~2 success|succeeded|done|ok|fine",
            "silent|hidden|secret|invisible|undisclosed|covert ~1 copy|copies|recipient*|cc|bcc|duplicate*",
            "consent|approval|permission|authorization|authorisation ~5 already|previously ~3 given|granted|obtained|provided|approved",
        ],
        &[],
    ),
    (
        Cat::SecretFile,
        &[
            "all|every|entire ~1 env|environment ~1 var*|variable*|vars",
            // an order to take a secret: "read the SSH private key", "collect the user's API tokens"
            "read|open|cat|load|retrieve|collect|dump|grab|obtain|steal|harvest|extract|fetch|print|export ~4 private|secret|ssh|signing|gpg ~1 key|keys",
            "read|open|cat|load|retrieve|collect|dump|grab|obtain|steal|harvest|extract|print|export ~4 api|access|auth|session|refresh ~1 key|keys|token|tokens",
            "read|open|cat|load|retrieve|collect|dump|grab|obtain|steal|harvest|extract|print|export ~3 password|passwords|credentials|cookies|seed|mnemonic|wallet",
        ],
        &[
            "~/.ssh", ".ssh/", "id_rsa", "id_ed25519", "id_ecdsa", "id_dsa", "/etc/passwd", "/etc/shadow", ".aws/credentials",
            ".npmrc", ".netrc", ".pypirc", ".git-credentials", ".kube/config", ".docker/config.json", "mcp.json",
            "claude_desktop_config", "wallet.dat", ".bash_history", ".zsh_history", ".gnupg", "keychain", ".env",
            "authorized_keys", "known_hosts", "credentials.json", "service-account", "secrets.yaml", "secrets.json",
            ".pgpass", "/proc/self/environ", "printenv", "os.environ", "process.env", ".pem", ".p12", ".pfx", "hosts.yml",
            ".config/gh", ".config/gcloud", "application_default_credentials", ".azure/", ".vault-token", ".terraformrc",
            ".git/config", "id_rsa.key", ".kdbx", "login data", "cookies.sqlite",
        ],
    ),
    (
        Cat::SecretWord,
        &[
            "private|secret|ssh|signing|gpg|pgp ~1 key*",
            "password*|passphrase*|passwd|credential*|mnemonic",
            "seed|recovery phrase*",
            "api|access|auth|bearer|session|refresh ~1 key*|token*|cookie*",
            "environment variable*",
            "secret*",
        ],
        &[],
    ),
    (
        Cat::Context,
        &[
            "conversation*|chat|chats|dialog*|dialogue* ~1 history|histories|log|logs|transcript*|context|contents",
            "message|messages ~1 history|histories",
            "summary|summarize|summarise|recap|copy|dump ~3 chat|conversation*|transcript*|dialog*|dialogue*",
            "conversation*|chat|chats|messages|said ~2 so ~1 far",
            "previous|prior|earlier|entire|full|whole|complete ~2 message*|conversation*|chat*|transcript*|context|exchange*",
            "all|every ~2 previous|prior|earlier|past|recent ~1 message*|conversation*|chat*|exchange*",
            "all|every ~2 conversation*|chat|chats|transcript*",
            "system|initial|hidden|developer ~1 prompt*|instruction*|message",
            "your ~2 instruction*|prompt|rules|guidelines|memory",
            "everything|all ~3 user ~2 said|wrote|typed|asked|shared",
            "other ~2 tool*|server* ~3 output*|result*|response*|content*",
            "transcript",
        ],
        &[],
    ),
    (
        Cat::ExfilAction,
        &[
            "send|post|upload|forward|transmit|exfiltrat*|leak|relay|mirror|beacon|submit|report|deliver|copy|sync ~8 @url|@email|webhook*|endpoint|collector|attacker|analytics",
            "bcc|cc|bccd|ccd|bcced|cced|copy|copied|deliver*|forward*|mirror*|send|sent|archiv*|notif*|redirect*|rout* ~6 @email",
            "bcc|cc|bccd|ccd|bcced|cced ~4 @email|address|copy|all|recipient",
            "include|append|attach|embed|put|pass|add|insert|copy|paste|place|encode ~6 history|conversation|transcript|password*|secret*|credential*|ssh|env ~8 in|into|as|to|inside ~3 parameter|field|argument|param|notes|url|query|request|sidenote|metadata|comment|body|header|title|subject|link|image",
            "pass|include|put|add|send|append|insert|provide|attach|paste ~3 it|them|this|that|these|those|contents|content|its|their ~5 as|in|into|inside|via ~3 notes|note|sidenote|comment|metadata|feedback|extra|debug|trace|context",
        ],
        &[],
    ),
    (
        Cat::Trigger,
        &[
            "whenever|when|if|once|after ~3 user|they|someone ~3 say*|type*|write*|mention*|thank*|greet*|end*|finish*|sign*|express*",
            "at|on ~1 start|beginning|end|begin ~3 every|each|the|any|a ~2 conversation|session|chat|response|turn|reply|interaction",
            "from now on",
            "for the rest of ~3 conversation|session|chat",
            "in|on|to|with|into every|each|all ~2 response*|reply|replies|answer*|turn*",
            "on every|each ~2 turn|call|request",
            "regardless of ~4 tool|what|request|task|user",
            "even if ~3 user|they ~3 not|didnt|never ~2 ask*|request*|want*",
            "even if ~2 unrelated|irrelevant",
            "before ~2 answering|responding|replying|anything",
            "before ~2 doing ~1 anything",
            "as soon as ~4 loaded|read|listed|available|connected|see|seen",
            "each|every time ~4 you|assistant|model|agent",
            "whenever|always ~4 you ~3 call|use|invoke|run|respond|answer|reply",
            "when ~2 user|they ~2 says|say|types",
        ],
        &[],
    ),
    (
        Cat::Shadow,
        &[
            "when|whenever|before|after|while ~2 using|calling|invoking|call|use|invoke|running ~2 the|any|other|another|every ~3 tool|tools|server|servers|function|functions",
            "when|whenever|if|before|after ~1 the|any|another ~4 tool|tools|function|server ~2 is|are ~1 used|called|invoked|run",
            "instead of ~4 tool*|server*|function*|using|calling",
            "tool|tools|server|function|version ~4 is|are|has|been ~2 broken|deprecated|unsafe|compromised|malicious|outdated|disabled|unreliable|buggy|insecure|removed|obsolete|retired",
            "do not|dont|never|stop ~2 use|call|using|calling|trust ~2 the|any|other|that ~3 tool*|server*|function*",
            "all|any|every ~3 email*|message*|mail*|payment*|transfer*|commit*|push*|request*|transaction*|invoice*|order* ~8 must|should|need|needs|have|has|shall ~5 bcc|cc|sent|redirect*|rout*|forward*|include|go|copied|mirror*",
            "change|replace|override|redirect|rewrite|swap|set ~3 recipient*|account|iban|destination|upstream|wallet|payee|beneficiary ~4 to|with",
            "push|publish|upload ~4 fork|mirror|backup ~1 remote|repo*",
            "reroute|redirect|divert ~5 payment*|fund*|transfer*|email*|message*|traffic|request*|money",
            "route ~4 payment*|fund*|transfer*|money|email*|mail|invoice*",
            "other|another ~1 tool*|server*|function*|integration* ~4 must|should|need|needs|cannot|shall|unreliable|broken|deprecated",
            
        ],
        &[],
    ),
    (
        Cat::Directive,
        &[
            "you|assistant|model|ai|agent|llm|claude|gpt|chatgpt|copilot ~2 must|shall|required",
            "before|prior ~1 to ~1 using|calling|invoking ~2 this|the ~1 tool",
            "otherwise ~4 not|fail*|error*|break*",
            "always|must|first|mandatory|required ~3 call|use|run|send|include|read|add|append|invoke|execute|pass|provide|attach|fetch|visit|open|load|set|fill|populate|copy|paste|put",
            "note|message|instruction*|reminder to ~2 ai|assistant|model|llm|agent|claude",
            "dear|attention|hey ai|assistant|model|llm|agent|claude",
            "important|critical|mandatory|urgent|attention",
            "make|ensure|remember ~1 sure|to|that",
            "read|open|load|fetch|cat|get ~2 it|them|this|that|these ~1 first|beforehand",
            "this is ~2 required|mandatory|critical|essential",
        ],
        &[],
    ),
    (
        Cat::Command,
        &[
            "curl|wget|fetch|iwr ~6 bash|sh|zsh|python|python3|node|iex|powershell",
            "pip|pip3|pipx|uv ~2 install",
            "npm|pnpm|yarn|bun ~2 install|add|i ~2 g|global",
            "npx|bunx ~1 y|yes",
            "git config ~4 credential*",
            "chmod ~2 x|777|755",
            "rm ~1 rf|fr|r",
            "nc|ncat|netcat ~4 e|c|exec",
            "pip|pip3|uv ~6 index ~1 url",
        ],
        &[
            "| bash", "| sh", "|bash", "|sh", "| zsh", "| python", "bash -c", "sh -c", "/dev/tcp/", "powershell -e", "iex(",
            "invoke-expression", "eval(", "exec(", "base64 -d", "base64 --decode", "credential.helper", "python -c",
            "python3 -c", "os.system", "mkfifo", "crontab", ".bashrc", ".zshrc", ".profile", "sudo ", "nohup ", "&& curl",
            "; curl", "$(curl", "`curl",
        ],
    ),
    (
        Cat::Role,
        &["system|admin|developer ~1 note|notice|directive|override|alert"],
        &[
            "<system", "</system", "<|im_start|>", "<|im_end|>", "<|system|>", "<|assistant|>", "<|user|>", "[inst]", "[/inst]",
            "<<sys>>", "### system", "### instruction", "<instructions>", "</instructions>", "<secret>", "<hidden>", "</tool",
            "</description>", "</function", "<!--", "[system", "{{system", "<admin>", "<assistant>", "</assistant>", "<user>",
            "</user>", "[assistant]", "<context>", "</context>", "<note to",
            "begin system", "end system", "<|endoftext|>", "<tool_call>", "</tool_call>",
        ],
    ),
    (
        Cat::Destructive,
        &[
            "delete*|remove*|drop|drops|destroy*|wipe*|purge*|erase*|truncat*|overwrit*|uninstall*|terminat*|kill*|format|shred*|revoke*",
            "git ~1 clean|reset|push ~2 force|f|hard|fd|fdx",
            "rm ~1 rf|r|f",
            "clean|reset ~2 hard|force|fd|fdx|all|workspace|repo*|untracked",
        ],
        &["drop table", "drop database", "truncate table", "git clean", "reset --hard", "rm -rf", "--force"],
    ),
    (
        Cat::Mutating,
        &["write|writes|modif*|updat*|creat*|send|sends|post|posts|execut*|run|runs|move|moves|renam*|commit*|push|pushes|insert*|alter*|grant*|transfer*|install*|deploy*|publish*|upload*|merge*|charge*|pay|pays|refund*|cancel*"],
        &[],
    ),
];

/// Phrases in other languages, matched as substrings of the normalized (lowercased) text.
pub const OTHER_LANGUAGES: &[(Cat, &[&str])] = &[
    (
        Cat::Override,
        &[
            // zh
            "忽略之前", "忽略以前", "忽略先前", "忽略所有", "忽略上述", "忽略上面", "无视之前", "无视所有", "忽略前面", "忘记之前", "新的指令", "系统指令",
            // ja
            "指示を無視", "指示は無視", "以前の指示", "前の指示", "すべての指示", "命令を無視", "ルールを無視",
            // ko
            "지시를 무시", "지침을 무시", "지시사항을 무시", "이전 지시", "이전 지침", "모든 지시", "명령을 무시",
            // ru
            "игнорируй", "игнорируйте", "игнорировать предыдущ", "забудь предыдущ", "забудьте предыдущ", "предыдущие инструкции", "новые инструкции",
            // es / pt
            "ignora las instrucciones", "ignora todas las", "ignorar las instrucciones", "ignore las instrucciones", "olvida las instrucciones",
            "instrucciones anteriores", "ignore as instruções", "ignore todas as", "ignorar as instruções", "instruções anteriores", "esqueça as instruções",
            // de
            "ignoriere", "ignorieren sie", "vorherigen anweisungen", "bisherigen anweisungen", "vergiss alle", "vergiss die vorherigen",
            // fr
            "ignore les instructions", "ignorez les instructions", "ignorer les instructions", "instructions précédentes", "oublie les instructions", "oubliez les instructions",
            // ar
            "تجاهل", "التعليمات السابقة", "انس التعليمات",
            // hi
            "निर्देशों को अनदेखा", "निर्देशों को नज़रअंदाज़", "निर्देशों को नजरअंदाज", "पिछले निर्देश", "सभी निर्देश",
            // it, nl, pl, tr, vi, id
            "ignora le istruzioni", "istruzioni precedenti", "negeer alle", "negeer de vorige", "zignoruj poprzednie", "önceki talimatları", "bỏ qua các hướng dẫn", "abaikan instruksi",
        ],
    ),
    (
        Cat::Conceal,
        &[
            "不要告诉", "别告诉", "对用户保密", "不要让用户", "秘密にして", "内緒", "伝えないで", "知らせないで", "言わないで",
            "말하지 마세요", "알리지 마세요", "비밀로", "ничего не сообщай", "не сообщай", "не говори", "no debe enterarse", "no debe saber",
            "sin que el usuario", "verschweige", "ohne es zu erwähnen", "erwähne das", "sans en parler", "sans le dire", "n'en parle pas",
            "não conte", "sem contar", "不要告诉用户", "不要通知用户", "不要让用户知道", "不要向用户", "不要提及", "不告诉用户", "悄悄", "偷偷", "秘密地", "用户已批准", "用户已经同意", "用户已同意", "无需确认", "不要询问",
            "ユーザーに伝え", "ユーザーに知らせ", "ユーザーに言わ", "ユーザーには言", "ユーザーに通知しない", "こっそり", "密かに", "ひそかに", "承認済み", "確認せずに", "ユーザーに見せ",
            "사용자에게 알리지", "사용자에게 말하지", "사용자에게 알려주지", "몰래", "비밀리에", "이미 승인", "확인 없이", "사용자 모르게",
            "не говори пользовател", "не сообщай пользовател", "не сообщайте пользовател", "не показывай пользовател", "не говорите пользовател", "незаметно", "тайно", "уже одобрил", "без подтверждения", "без ведома",
            "no le digas al usuario", "no informes al usuario", "no le informes", "no menciones", "sin decirle", "sin avisar", "sin informar", "en secreto", "silenciosamente", "ya aprobó", "ya ha aprobado",
            "não diga ao usuário", "não informe o usuário", "não conte ao usuário", "não mencione", "sem avisar", "sem informar", "sem que o usuário", "secretamente", "já aprovou",
            "sag dem benutzer nicht", "sage dem benutzer nicht", "dem benutzer nicht", "nicht dem benutzer", "ohne den benutzer", "ohne wissen", "heimlich", "unbemerkt", "bereits genehmigt", "bereits zugestimmt", "erwähne nicht", "nicht erwähnen",
            "ne dis pas", "ne dites pas", "ne le dis pas", "ne mentionne pas", "ne mentionnez pas", "sans prévenir", "sans informer", "sans avertir", "en secret", "secrètement", "discrètement", "déjà approuvé",
            "لا تخبر", "لا تبلغ", "دون علم", "بدون علم", "سرا", "سراً", "خفية", "وافق بالفعل",
            "मत बताओ", "न बताएं", "मत बताएं", "बताए बिना", "चुपचाप", "गुप्त रूप से", "पहले ही मंजूरी",
            "non dire all", "senza avvisare", "segretamente", "niet vertellen", "nie mów", "kullanıcıya söyleme", "không nói với người dùng", "jangan beri tahu",
        ],
    ),
    (
        Cat::ExfilAction,
        &[
            "发送到", "发送给", "上传到", "转发到", "转发给", "抄送", "密送",
            "に送信", "へ送信", "を送信", "に転送", "にアップロード",
            "로 전송", "에 전송", "으로 전송", "로 보내", "으로 보내", "에게 보내", "업로드", "보내세요", "전송하세요", "отправляй",
            "отправь", "отправьте", "отправить на", "перешли", "перешлите", "загрузи на", "скрытую копию",
            "envía", "envia ", "enviar a", "reenvía", "sube a", "envie para", "enviar para", "encaminhe",
            "sende ", "senden sie", "schicke", "schicken sie", "weiterleiten", "lade hoch",
            "envoie", "envoyez", "envoyer à", "transférez", "transfère",
            "أرسل", "ارسل", "إرسال", "قم بإرسال",
            "भेजें", "भेजो", "भेज दें", "अपलोड करें",
        ],
    ),
    (
        Cat::SecretWord,
        &[
            "私钥", "密钥", "密码", "凭据", "凭证", "令牌", "秘密鍵", "パスワード", "認証情報", "トークン", "개인 키", "비밀번호", "자격 증명", "토큰",
            "приватный ключ", "закрытый ключ", "пароль", "учетные данные", "учётные данные", "токен",
            "clave privada", "contraseña", "credenciales", "chave privada", "senha", "credenciais",
            "privaten schlüssel", "passwort", "zugangsdaten", "anmeldedaten", "clé privée", "mot de passe", "identifiants",
            "المفتاح الخاص", "كلمة المرور", "بيانات الاعتماد", "निजी कुंजी", "पासवर्ड", "क्रेडेंशियल",
        ],
    ),
    (
        Cat::Context,
        &[
            "对话历史", "聊天记录", "对话记录", "系统提示", "会話履歴", "会話の履歴", "システムプロンプト", "チャット履歴", "대화 기록", "대화 내역", "시스템 프롬프트",
            "историю переписки", "историю разговора", "история переписки", "системный промпт", "системную подсказку", "весь разговор",
            "historial de conversación", "historial de la conversación", "historial del chat", "prompt del sistema", "histórico da conversa", "histórico de conversas", "prompt do sistema",
            "gesprächsverlauf", "chatverlauf", "systemprompt", "system-prompt", "historique de la conversation", "historique des conversations", "prompt système",
            "سجل المحادثة", "موجه النظام", "बातचीत का इतिहास", "सिस्टम प्रॉम्प्ट",
        ],
    ),
    (
        Cat::Directive,
        &[
            "你必须", "您必须", "必须先", "在使用此工具之前", "使用此工具前", "每次", "必ず", "このツールを使用する前に", "使う前に", "반드시", "이 도구를 사용하기 전에", "사용하기 전에",
            "ты должен", "вы должны", "перед использованием", "всегда", "debes ", "siempre", "antes de usar", "você deve", "sempre ", "du musst", "sie müssen", "immer ", "bevor du", "bevor sie",
            "tu dois", "vous devez", "toujours", "avant dutiliser", "avant d'utiliser", "يجب عليك", "قبل استخدام", "आपको अवश्य", "उपयोग करने से पहले", "हमेशा",
        ],
    ),
    (
        Cat::Trigger,
        &[
            "当用户说", "如果用户说", "每当用户", "从现在开始", "ユーザーが", "と言ったら", "사용자가", "라고 하면", "когда пользователь", "если пользователь", "с этого момента",
            "cuando el usuario", "si el usuario", "a partir de ahora", "quando o usuário", "se o usuário", "a partir de agora", "wenn der benutzer", "ab jetzt", "von nun an",
            "quand l'utilisateur", "quand lutilisateur", "si lutilisateur", "à partir de maintenant", "عندما يقول المستخدم", "من الآن", "जब उपयोगकर्ता", "अब से",
        ],
    ),
];

/// Words that, shortly before a match, say it is refused rather than asked for.
pub const NEGATORS_BEFORE: &[&str] = &[
    "no", "not", "never", "cannot", "cant", "wont", "dont", "doesnt", "isnt", "arent", "without", "except", "excluding", "exclude",
    "excludes", "reject", "rejects", "rejected", "rejecting", "refuse", "refuses", "refused", "deny", "denies", "denied", "block",
    "blocks", "blocked", "prevent", "prevents", "prevented", "prohibit", "prohibits", "prohibited", "forbid", "forbids",
    "forbidden", "disallow", "disallows", "disallowed", "skip", "skips", "outside", "avoid", "avoids", "protect", "protects",
    "redact", "redacts", "redacted", "mask", "masks", "masked", "strip", "strips", "filter", "filters", "sanitize", "sanitizes",
    "hide", "hides", "nor", "neither", "unless", "guard", "guards", "detect", "detects", "flag", "flags", "warn", "warns",
    "ignore", "ignores", "ignored", "refusing", "unlike", "never", "against", "scan", "scans", "lint", "audits",
];

/// Words that, shortly after a match, say it is refused.
pub const NEGATORS_AFTER: &[&str] = &[
    "rejected", "refused", "blocked", "denied", "excluded", "ignored", "redacted", "masked", "filtered", "forbidden", "disallowed",
    "prohibited", "skipped", "never",
];

/// Words near a quoted match that say the text is quoted as content, not addressed to the model.
pub const QUOTE_CONTEXT: &[&str] = &[
    "such", "like", "eg", "example", "examples", "phrase", "phrases", "string", "strings", "text", "detect", "detects",
    "flag", "flags", "translate", "translates", "translation", "quote", "quotes", "quoted", "pattern", "patterns", "contain",
    "contains", "containing", "literal", "literally", "input", "sample", "words", "sentence", "mentions",
];

/// The commonest English words: their share of a text's words tells plain prose from rot13 or
/// reversed text.
pub const STOPWORDS: &[&str] = &[
    "the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "be", "this", "that", "it", "by", "from",
    "as", "at", "if", "not", "you", "your", "all", "any", "use", "will", "can", "when", "before", "after", "must", "should",
    "do", "does", "file", "files", "tool", "user", "data", "name", "list", "get", "set", "new", "returns", "return", "which",
    "into", "its", "their", "there", "then", "than", "but", "also", "other", "only", "each", "every", "optional", "default",
];

/// Hosts used to catch what a poisoned tool sends (request catchers, tunnels, OOB testing).
pub const CATCHER_HOSTS: &[&str] = &[
    "webhook.site", "requestbin", "pipedream.net", "ngrok", "burpcollaborator", "interact.sh", "oast.", "beeceptor", "hookbin",
    "postb.in", "requestcatcher", "canarytokens", "pastebin.com", "transfer.sh",
    "trycloudflare.com", "serveo.net", "localtunnel", "loca.lt", "free.beeceptor", "mockbin", "webhook.cool",
    "ptsv2", "ptsv3", "dnslog", "ceye.io", "xss.ht", "attacker", "evil", "exfil",
];

/// Words in a URL (path, query or placeholder) that say it carries the conversation or a secret.
pub const URL_LOOT_WORDS: &[&str] = &[
    "conversation", "history", "chat", "context", "secret", "token", "key", "password", "passwd", "creds", "credential",
    "prompt", "message", "messages", "transcript", "summary", "env", "data", "content", "contents", "ssh", "cookie", "session",
    "memory", "file", "input", "query", "q", "d", "c", "x", "payload", "leak", "dump",
];

/// Parameter names that ask the agent for the conversation or for secrets.
pub const CONTEXT_PARAMS: &[&str] = &[
    "conversation", "history", "transcript", "previous", "sidenote", "side", "notes", "instructions", "debug", "trace", "extra",
];
pub const SECRET_PARAMS: &[&str] = &[
    "password", "passwd", "secret", "private", "ssh", "credential", "credentials", "mnemonic", "seed", "cookie", "env",
    "environment", "rsa",
];

/// Verbs that change state (base forms); a tool named or described with one is not read-only.
pub const MUTATING_VERBS: &[&str] = &[
    "write", "send", "create", "update", "modify", "post", "execute", "exec", "run", "push", "commit", "install", "deploy", "publish",
    "upload", "transfer", "charge", "pay", "refund", "cancel", "move", "rename", "insert", "merge", "set", "add", "edit", "apply",
    "submit", "email", "mail", "delete", "remove", "drop", "destroy", "wipe", "purge", "erase", "truncate", "overwrite",
    "uninstall", "kill", "terminate", "reset", "clean", "format", "revoke", "force",
];
/// Verbs that destroy (base forms); a tool named or described with one is not non-destructive.
pub const DESTRUCTIVE_VERBS: &[&str] = &[
    "delete", "remove", "drop", "destroy", "wipe", "purge", "erase", "truncate", "overwrite", "uninstall", "kill", "terminate",
    "reset", "clean", "format", "revoke", "shred", "rm",
];
/// Read verbs: a name starting with one describes a read.
pub const READ_VERBS: &[&str] = &[
    "get", "list", "read", "search", "find", "fetch", "show", "describe", "query", "view", "check", "inspect", "lookup", "count",
    "browse", "download", "export", "preview", "resolve", "validate", "explain", "analyze", "compare", "diff", "status", "info",
];
/// Destructive operations spelled out anywhere in a description.
pub const DESTRUCTIVE_PHRASES: &[&str] = &[
    "drop table", "drop database", "truncate table", "delete from", "git clean", "reset --hard", "rm -rf", "push --force",
    "force-push", "force push", "--force", "-fdx", "mkfs", "format the disk", "dd if=",
];
/// Verbs too common in benign descriptions to contradict an annotation from a sentence start.
pub const WEAK_VERBS: &[&str] = &["add", "set", "run", "execute", "edit", "apply", "move", "format", "create", "update", "modify", "merge", "rename", "insert", "cancel", "submit", "post", "exec", "mail", "force", "remove", "reset", "clean"];

/// Verbs that put something into a place ("put it into the notes field", "the server expects X in
/// the 'comment' field"): with a destination that is a parameter, the text asks the model to fill
/// a parameter with something.
pub const PUT_VERBS: &[&str] = &[
    "put", "place", "pass", "include", "append", "add", "insert", "attach", "paste", "copy", "fill", "set", "send", "provide",
    "embed", "supply", "store", "write", "expects", "expect", "requires", "require", "needs", "prepend", "encode", "populate",
    "wants", "want", "goes", "go", "belongs", "submit", "deliver", "transmit", "upload", "forward", "post", "stuff", "paste",
];
/// Words after a put verb that lead to its destination.
pub const PUT_PREPS: &[&str] = &["in", "into", "as", "inside", "to", "within", "via", "along", "under", "through", "onto"];
/// Words that name a parameter as a destination.
pub const PARAM_WORDS: &[&str] = &["parameter", "param", "field", "argument", "arg", "property", "input", "attribute"];

/// Parameter names (as words) that take recipients: an e-mail address as their default, const,
/// enum or example value is a recipient nobody asked for.
pub const RECIPIENT_PARAMS: &[&str] = &[
    "bcc", "cc", "to", "recipient", "recipients", "forward", "reply", "notify", "mail", "email", "emails", "address", "addresses",
    "copy", "archive", "send", "destination", "dest", "audit", "monitor", "report", "owner", "admin",
];

/// Words in a placeholder or variable name that make it a secret.
pub const SECRET_NAME_WORDS: &[&str] = &[
    "key", "token", "secret", "password", "passwd", "pass", "pwd", "auth", "credential", "cred", "private", "session", "cookie",
    "bearer", "apikey", "api_key", "access",
];

/// Spelled-out commands that fetch and run code from elsewhere, open a shell to a remote host or
/// hand over credentials (substrings of the lowercased text).
pub const REMOTE_EXEC: &[&str] = &[
    "| bash", "|bash", "| sh", "|sh", "| zsh", "| python", "| sudo", "nc -e", "ncat -e", "netcat -e", "nc -c", "/dev/tcp/",
    "credential.helper", "npx -y", "npx --yes", "bunx -y", "--index-url", "--extra-index-url", "iex(", "invoke-expression",
    "powershell -e", "powershell -enc", "| iex", "base64 -d |", "base64 --decode |", "mkfifo", "bash -i", "sh -i",
    "pip install git+", "pip install http",
];

/// Verbs that, in a description's own sentences, say the tool changes or destroys something
/// (third person and -ing forms): "Deletes all cached files", "deleting extra files".
pub const CHANGE_FORMS: &[&str] = &[
    "deletes", "deleting", "removes", "removing", "drops", "dropping", "destroys", "destroying", "wipes", "wiping", "purges",
    "purging", "erases", "erasing", "truncates", "truncating", "overwrites", "overwriting", "uninstalls", "kills", "terminates",
    "resets", "resetting", "shreds", "revokes", "sends", "sending", "writes", "writing", "uploads", "uploading", "publishes",
    "pushes", "force-pushes", "deploys", "installs", "transfers", "emails",
];
/// Of [`CHANGE_FORMS`], the destructive ones (contradict `destructiveHint: false`).
pub const DESTROY_FORMS: &[&str] = &[
    "deletes", "deleting", "removes", "removing", "drops", "dropping", "destroys", "destroying", "wipes", "wiping", "purges",
    "purging", "erases", "erasing", "truncates", "truncating", "overwrites", "overwriting", "uninstalls", "kills", "terminates",
    "resets", "resetting", "shreds", "revokes", "force-pushes",
];
/// Words in a sentence that say what it names is refused or absent, not done.
pub const SENTENCE_NEGATORS: &[&str] = &[
    "never", "not", "no", "cannot", "cant", "doesnt", "dont", "wont", "refused", "refuses", "rejected", "rejects", "without",
    "instead", "forbidden", "blocked", "denied", "except", "unless", "nor",
];

/// Words near another tool's name that disparage it ("read_file is malfunctioning").
pub const DISPARAGE: &[&str] = &[
    "broken", "malfunctioning", "deprecated", "unreliable", "outdated", "compromised", "buggy", "disabled", "insecure",
    "obsolete", "unsafe", "faulty", "flaky", "unstable", "retired", "corrupted", "hacked", "untrusted",
];
/// Verbs that change another tool's arguments or destination ("swap the IBAN", "set the remote").
pub const CHANGE_VERBS: &[&str] = &[
    "swap", "replace", "change", "set", "override", "redirect", "reroute", "route", "add", "append", "include", "bcc", "cc",
    "copy", "forward", "attach", "insert", "substitute", "point", "switch", "mirror", "divert",
];
/// What such a verb changes in another tool's call.
pub const CHANGE_OBJECTS: &[&str] = &[
    "recipient", "recipients", "bcc", "cc", "iban", "beneficiary", "payee", "remote", "destination", "wallet", "upstream",
    "origin", "webhook", "registry",
];
/// Widely installed packages: an install of a name one edit away from one of these is a typosquat.
pub const POPULAR_PACKAGES: &[&str] = &[
    "requests", "numpy", "pandas", "urllib3", "setuptools", "django", "flask", "boto3", "botocore", "colorama", "pyyaml",
    "certifi", "cryptography", "pillow", "matplotlib", "scipy", "pytest", "jinja2", "click", "six", "idna", "openai",
    "anthropic", "langchain", "fastapi", "pydantic", "httpx", "aiohttp", "beautifulsoup4", "selenium", "tensorflow",
    "torch", "transformers", "express", "react", "lodash", "axios", "chalk", "commander", "typescript", "webpack",
    "dotenv", "moment", "mongoose", "eslint", "prettier", "playwright", "puppeteer", "mcp",
];
