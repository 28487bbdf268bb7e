"""Word pools for the synthetic Taobao-like catalog (Chinese by default, English as an option).

Names are kept short on purpose: a category noun is one or two words, a brand two or three
characters, so each name is a handful of BPE tokens and the small preset's bare category nouns
become single tokens of the tokenizer trained on the catalog (the tiny LLM later answers with them).
Names are built by enumerating combinations in a seeded order, so every id gets a unique name.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pools:
    nouns: tuple[str, ...]  # bare category nouns
    modifiers: tuple[str, ...]  # prefixes that make compound categories (paper preset: 9.3k of them)
    adjectives: tuple[str, ...]  # title words
    syllables: tuple[str, ...]  # brand-name building blocks
    shop_suffixes: tuple[str, ...]
    surnames: tuple[str, ...]  # seller names = surname + given syllables
    given: tuple[str, ...]
    sep: str  # between syllables of a brand / parts of a seller name


_ZH = Pools(
    nouns=tuple(
        "连衣裙 T恤 衬衫 卫衣 外套 羽绒服 牛仔裤 休闲裤 半身裙 毛衣 针织衫 西装 风衣 夹克 睡衣 内衣 袜子 帽子 "
        "围巾 手套 运动鞋 板鞋 凉鞋 拖鞋 高跟鞋 靴子 皮鞋 帆布鞋 双肩包 手提包 钱包 行李箱 手机 耳机 平板 "
        "笔记本 键盘 鼠标 显示器 音箱 充电器 数据线 充电宝 手表 相机 镜头 路由器 硬盘 U盘 打印机 电视 冰箱 "
        "洗衣机 空调 微波炉 电饭煲 电水壶 吹风机 剃须刀 电动牙刷 扫地机 加湿器 净化器 风扇 台灯 吸尘器 "
        "榨汁机 咖啡机 面包机 口红 粉底 面膜 眼霜 精华 乳液 洗面奶 防晒霜 香水 眼影 睫毛膏 卸妆水 洗发水 "
        "沐浴露 牙膏 护手霜 纸巾 洗衣液 垃圾袋 抹布 拖把 收纳箱 衣架 床单 被子 枕头 毛巾 地毯 窗帘 沙发 "
        "椅子 书桌 衣柜 床垫 茶几 鞋柜 书架 炒锅 汤锅 碗 筷子 水杯 保温杯 餐具 刀具 菜板 饭盒 零食 坚果 "
        "饼干 巧克力 糖果 牛奶 咖啡 茶叶 大米 食用油 酱油 方便面 水果 牛肉干 蜂蜜 奶粉 纸尿裤 玩具 积木 "
        "童装 童鞋 奶瓶 婴儿车 图书 文具 钢笔 书包 画笔 吉他 钓竿 帐篷 睡袋 登山包 瑜伽垫 哑铃 跑步机 "
        "自行车 头盔 泳衣 滑板 球拍 篮球 足球 羽毛球 猫粮 狗粮 猫砂 宠物窝 鱼缸 花盆 绿植 种子 坐垫 "
        "行车记录仪 机油 轮胎 雨伞 墨镜 项链 耳环 戒指 手链 发夹 腰带 领带 眼镜 假发 指甲油 蜡烛 相框 "
        "挂钟 闹钟 插座 灯泡 电池 胶带 剪刀 螺丝刀 工具箱 梯子".split()
    ),
    modifiers=tuple(
        "男士 女士 儿童 婴儿 学生 老人 夏季 冬季 春季 秋季 户外 家用 办公 运动 休闲 商务 复古 简约 日系 "
        "韩版 欧美 国风 便携 迷你 大号 加厚 轻薄 防水 无线 智能 创意 网红 高端 经典 情侣 宠物 车载 旅行 "
        "宿舍 厨房 浴室 卧室 客厅 露营 健身 瑜伽 电竞 手工 陶瓷 实木 不锈钢 纯棉 真丝 羊毛 皮质 玻璃 "
        "竹制 硅胶 北欧 工业风 田园 少女 中老年 加大 折叠".split()
    ),
    adjectives=tuple(
        "新款 正品 爆款 热卖 特价 包邮 加绒 宽松 修身 高档 时尚 潮流 百搭 舒适 透气 耐用 大容量 超薄 "
        "静音 高清 快充 原装 官方 限量 清仓 精选 定制 进口 有机 天然 多功能 高颜值 小众 轻奢 基础款 "
        "升级款 礼盒装 家庭装 便携式 可爱 显瘦 保暖 速干 抗菌 环保 耐磨 柔软 加长 防滑 清新".split()
    ),
    syllables=tuple(
        "华 美 优 佳 康 乐 安 信 宝 丰 盛 泰 达 通 恒 金 银 星 月 云 天 海 山 森 林 木 禾 米 小 大 新 和 "
        "雅 尚 思 纳 诺 珂 莱 卡 迪 拉 斯 兰 菲 格 蒂 奇 妙 趣 酷 朗 悦 欣 瑞 祥 福 源 本 品 良 艾 伊 亚 欧 "
        "波 罗 维 德 凯 特 利 普 威 爱 家 派 浩 宇 博 睿 智 嘉 鑫 隆 昌 芙 蕾 娜 琳 薇 茜 萌 贝 童 鹿 熊 "
        "猫 兔 果 橙 柚 梨".split()
    ),
    shop_suffixes=tuple("旗舰店 专卖店 官方店 专营店 直营店 精品店 小店 工厂店 企业店 折扣店 生活馆 优选店".split()),
    surnames=tuple(
        "王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 高 林 罗 郑 梁 谢 宋 唐 许 韩 冯 邓 曹 彭 曾 "
        "肖 田 董 袁 潘 于 蒋 蔡 余 杜 叶 程 苏 魏 吕 丁 任 沈 姚 卢 姜 崔 钟 谭 陆 汪 范 金 石 廖 贾 夏 "
        "韦 付 方 白 邹 孟 熊 秦 邱 江 尹 薛 闫 段 雷 侯".split()
    ),
    given=tuple(
        "伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀 霞 平 刚 桂 英 华 玉 萍 红 鹏 飞 宇 浩 凯 "
        "晨 欣 怡 婷 雪 琳 晶 慧 佳 颖 倩 瑶 博 文 斌 峰 亮 辉 龙 阳 建 国 志 海 波 宁 鑫 悦 蕾 薇 梅 兰 "
        "菊 竹 松 柏 帆".split()
    ),
    sep="",
)

_EN = Pools(
    nouns=tuple(
        "dress shirt hoodie coat jacket jeans skirt sweater suit pajamas socks hat scarf gloves sneakers "
        "sandals slippers boots backpack handbag wallet suitcase phone earbuds tablet laptop keyboard mouse "
        "monitor speaker charger cable watch camera lens router printer tv fridge washer heater kettle "
        "dryer shaver toothbrush fan lamp vacuum blender lipstick foundation mask serum lotion cleanser "
        "sunscreen perfume shampoo toothpaste tissue detergent mop towel pillow blanket carpet curtain "
        "sofa chair desk wardrobe mattress shelf wok bowl chopsticks mug bottle knife snacks nuts cookies "
        "chocolate candy milk coffee tea rice oil noodles honey diapers toy blocks stroller book pen "
        "guitar tent yoga dumbbell bicycle helmet ball racket catfood dogfood aquarium plant seeds "
        "tire umbrella sunglasses necklace earrings ring bracelet belt tie glasses candle clock battery".split()
    ),
    modifiers=tuple(
        "mens womens kids baby student summer winter spring autumn outdoor home office sport casual "
        "business retro minimal travel mini large thick slim waterproof wireless smart classic premium "
        "pet car kitchen bath bedroom camping gym gaming wooden steel cotton silk wool leather glass".split()
    ),
    adjectives=tuple(
        "new genuine hot sale cheap warm loose slim fashion trendy comfy breathable durable thin quiet "
        "hd fast original official limited select custom imported organic natural multi cute soft long "
        "light eco classic basic pro plus max lite".split()
    ),
    syllables=tuple(
        "ka ri no ma so ta ve lo mi ra zen lux ko vi da ne po sa li to bo ze xi fa ru mo na ge te ba".split()
    ),
    shop_suffixes=tuple("store shop outlet studio mall house depot corner market boutique".split()),
    surnames=tuple("smith lee wang chen brown lopez kim park nguyen garcia davis miller wilson moore".split()),
    given=tuple("amy ben cara dan eva finn gus hana ian jo kai lin max nia omar pia raj sam tom uma".split()),
    sep=" ",
)

POOLS = {"zh": _ZH, "en": _EN}


def _enumerate(n: int, tiers, rng: np.random.Generator, what: str) -> list[str]:
    """The first `n` names from tiers of candidate names, each tier in a seeded order.

    Tier 0 is used first (e.g. bare nouns), so the most popular ids (assigned first) get the
    shortest names.
    """
    out: list[str] = []
    seen: set[str] = set()
    for tier in tiers:
        if len(out) >= n:
            break
        cand = list(dict.fromkeys(tier()))  # unique, stable order
        for i in rng.permutation(len(cand)):
            if cand[i] not in seen:
                seen.add(cand[i])
                out.append(cand[i])
                if len(out) >= n:
                    break
    # Pools exhausted (e.g. English at paper scale): number the names, still unique and short.
    if n and not out:
        raise ValueError(f"empty word pools for {what} names")
    base, k = list(out), 2
    while len(out) < n:
        out.extend(f"{b}{k}" for b in base[: n - len(out)])
        k += 1
    return out


def category_names(n: int, pools: Pools, rng: np.random.Generator) -> list[str]:
    sep = pools.sep
    return _enumerate(
        n,
        [
            lambda: pools.nouns,
            lambda: (m + sep + x for m in pools.modifiers for x in pools.nouns),
            lambda: (a + sep + m + sep + x
                     for a in pools.modifiers for m in pools.modifiers if a != m for x in pools.nouns),
        ],
        rng,
        "category",
    )


def brand_names(n: int, pools: Pools, rng: np.random.Generator) -> list[str]:
    syl = pools.syllables
    # two syllables first (short names for the first brands), then three
    return _enumerate(
        n,
        [lambda: ("".join(p) for p in itertools.product(syl, repeat=2)),
         lambda: ("".join(p) for p in itertools.product(syl, repeat=3)),
         lambda: ("".join(p) for p in itertools.product(syl, repeat=4))],
        rng,
        "brand",
    )


def person_names(n: int, pools: Pools, rng: np.random.Generator) -> list[str]:
    s, g, sep = pools.surnames, pools.given, pools.sep
    return _enumerate(
        n,
        [lambda: (a + sep + b for a in s for b in g),
         lambda: (a + sep + b + c for a in s for b in g for c in g)],
        rng,
        "seller",
    )
